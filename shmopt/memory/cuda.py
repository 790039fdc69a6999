"""The CUDA storage backend: an arena's device region as one CUDA block, shared by CUDA IPC, and
the answers about ``cuda`` devices (``--device cuda:N``, ``--gpus``, the fence).

Block: the owner (the supervisor) allocates one ``torch.uint8`` block per arena with a single
allocation, before anything else of the run touches the device, so the cudaMalloc segment torch
exports is the buffer itself; sub-buffers are views at 256-byte aligned offsets
(memory.layout.DEVICE_ALIGN). It zeroes the block and synchronises the device before any export:
the event torch records at export covers the initial contents only, so later writes are ordered
by each process's fence (a stream sync) before the host counter that announces them. The control
block never lives here (its placement is HOST).

Handles: torch's ``reduce_tensor`` gives a plain, picklable argument tuple. Every consumer gets
a tuple of its own (:meth:`CudaStorage.export`, called once per spawned process: rebuilding one
tuple twice underflows torch's reference count, pytorch #149187; reducing without rebuilding
leaks), rebuilds it once in :meth:`CudaBackend.attach` (opening a handle can take hundreds of ms)
and holds the tensor for its life; a consumer never re-exports (torch refuses). The device
travels as its UUID and is mapped to the consumer's own index (``CUDA_VISIBLE_DEVICES`` may
differ between processes, pytorch #149196). ``reduce_tensor`` is not a documented API: its tuple
is checked here (``REDUCE_ARGS`` fields, the device at ``REDUCE_DEVICE_AT``) and pinned by a GPU test. A
kernel on another GPU must not dereference the block (illegal memory access): learners on other
GPUs (``--gpus``) copy from and to it.

Refused: expandable segments (they switch CUDA IPC to file-descriptor handles through
``pidfd_getfd``, which containers forbid, pytorch #165685) and arenas across nodes (that needs
NCCL). Nothing here initialises CUDA before a block is made: the device count is read through
NVML (``PYTORCH_NVML_BASED_CUDA_CHECK``), because CUDA cannot be used in a process forked after
it was initialised (the fork server, the supervisor's children).

Release: a consumer synchronises and drops its tensor; the owner synchronises, drops the block,
then ``torch.cuda.ipc_collect()`` and ``empty_cache()``. The owner must outlive its consumers; a
consumer killed by a signal pins the block until the owner exits.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import torch

from ..errors import ConfigError
from .storage import StorageHandle

REDUCE_ARGS, REDUCE_DEVICE_AT = 15, 6          # torch.multiprocessing.reductions.reduce_tensor, CUDA case


def expandable_segments_on(env=os.environ) -> bool:
    conf = ",".join(env.get(k, "") for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"))
    return "expandable_segments:true" in conf.replace(" ", "").lower()


def _refuse_expandable_segments() -> None:
    if expandable_segments_on():
        raise ConfigError("PYTORCH_CUDA_ALLOC_CONF turns expandable_segments on: a CUDA arena needs it off "
                          "(CUDA IPC of expandable segments fails in containers); unset it")


def device_uuid(index: int) -> str:
    return str(torch.cuda.get_device_properties(index).uuid)


def index_of(uuid: str) -> int:
    """This process's index of the device with ``uuid``."""
    for i in range(torch.cuda.device_count()):
        if device_uuid(i) == uuid:
            return i
    raise RuntimeError(f"the CUDA device {uuid} of the arena is not visible in this process "
                       f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})")


def export_args(buf: torch.Tensor) -> tuple:
    """One consumer's attach arguments for ``buf`` (a fresh reduction every call)."""
    from torch.multiprocessing.reductions import reduce_tensor
    _, args = reduce_tensor(buf)
    if len(args) != REDUCE_ARGS:
        raise RuntimeError(f"torch {torch.__version__}: reduce_tensor gave {len(args)} fields for a CUDA "
                           f"tensor, shmopt.memory.cuda expects {REDUCE_ARGS}")
    return tuple(args)


def rebuild(args: tuple, index: int) -> torch.Tensor:
    from torch.multiprocessing.reductions import rebuild_cuda_tensor
    args = list(args)
    args[REDUCE_DEVICE_AT] = index
    return rebuild_cuda_tensor(*args)


class CudaStorage:
    """A CUDA block: the owner's allocation or a consumer's rebuilt IPC view of it."""

    def __init__(self, buf: torch.Tensor, handle: StorageHandle, owner: bool) -> None:
        self._buf: torch.Tensor | None = buf
        self.handle, self.owner = handle, owner
        self.device = buf.device

    def bytes(self, offset: int, nbytes: int) -> torch.Tensor:
        if self._buf is None:
            raise RuntimeError("the CUDA arena block was released")
        return self._buf[offset:offset + nbytes]

    def host_buffer(self) -> memoryview:
        raise TypeError("a CUDA block has no host buffer: the control block is always in host memory")

    def fileno(self) -> int:
        raise TypeError("a CUDA block has no file descriptor: lock on the host block")

    def export(self) -> StorageHandle:
        """A handle for one more consumer process (owner only)."""
        if not self.owner or self._buf is None:
            raise RuntimeError("only the owner of a CUDA arena block exports it, and only while it lives")
        return replace(self.handle, extra=(export_args(self._buf), device_uuid(self.device.index)))

    def sync(self) -> None:
        """Wait for every stream of this process on the block's device (not other processes')."""
        if self._buf is not None:
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        if self._buf is not None:
            self.sync()
            self._buf = None

    def unlink(self) -> None:
        """Owner: drop the block and return the memory torch can (freed for good once every
        consumer has dropped its view); after :meth:`close` too."""
        if not self.owner:
            return
        self.close()
        self.owner = False
        torch.cuda.ipc_collect()
        torch.cuda.empty_cache()


class CudaBackend:
    """The :class:`~shmopt.memory.storage.Backend` of ``cuda`` arenas (CUDA IPC)."""

    name = "cuda-ipc"
    device_type = "cuda"
    label = "CUDA"

    def create(self, nbytes: int, device: torch.device, tag: str = "") -> CudaStorage:
        if not torch.cuda.is_available():
            raise ConfigError(f"no CUDA device for an arena on {device}: torch {torch.__version__} sees "
                              f"none here; use the cpu device")
        _refuse_expandable_segments()
        # a first, large allocation is a cudaMalloc segment of its own; if the process allocated
        # before, torch still exports correctly (the segment plus this block's offset in it)
        buf = torch.zeros(max(nbytes, 1), dtype=torch.uint8, device=device)
        torch.cuda.synchronize(device)
        index = buf.device.index if buf.device.index is not None else torch.cuda.current_device()
        handle = StorageHandle(self.name, f"cuda:{device_uuid(index)}{':' + tag if tag else ''}", nbytes)
        return CudaStorage(buf, handle, owner=True)

    def attach(self, handle: StorageHandle) -> CudaStorage:
        if handle.extra is None:
            raise RuntimeError("a CUDA arena handle without attach arguments: the owner must export() "
                               "one per process")
        args, uuid = handle.extra
        return CudaStorage(rebuild(args, index_of(uuid)), handle, owner=False)

    def device_count(self) -> int:
        """Visible CUDA devices (0 in a CPU build), read without initialising CUDA."""
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        if not torch.cuda.is_available():
            return 0
        return torch.cuda.device_count()

    def resolve(self, text: str, index: int | None, visible: int, nnodes: int) -> str:
        if visible == 0:
            raise ConfigError(f"--device {text}: torch {torch.__version__} sees no CUDA device (a CPU build, "
                              f"no driver, or CUDA_VISIBLE_DEVICES empty); use --device cpu")
        i = index or 0
        if i >= visible:
            raise ConfigError(f"invalid device={text!r}: {visible} CUDA device(s) visible, "
                              f"indices 0..{visible - 1}")
        if nnodes > 1:
            raise ConfigError("--device cuda across nodes needs NCCL between the nodes, which shmopt does "
                              "not have yet: use --device cpu with --nnodes > 1")
        _refuse_expandable_segments()
        return f"cuda:{i}"

    def fence(self, device: torch.device) -> Callable[[], None]:
        """The current stream's synchronize: the engine's processes queue their work on it."""
        return torch.cuda.current_stream(device).synchronize

    def device_id(self, index: int) -> str:
        return device_uuid(index)

    def local_index(self, device_id: str) -> int:
        return index_of(device_id)


BACKEND = CudaBackend()
