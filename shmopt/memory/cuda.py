"""The CUDA storage backend: an arena's device region as one CUDA block, shared by CUDA IPC.

The owner (the supervisor) allocates one ``torch.uint8`` block per arena with a single
allocation, before anything else of the run touches the device, so the cudaMalloc segment torch
exports is the buffer itself; sub-buffers are views at 256-byte
aligned offsets (memory.layout.DEVICE_ALIGN). It zeroes the block and synchronises the device
before any export. Expandable segments are refused: they switch CUDA IPC to file-descriptor
handles through ``pidfd_getfd``, which containers forbid (pytorch #165685).

Handles: torch's ``reduce_tensor`` gives a plain, picklable argument tuple. Every consumer gets
a tuple of its own (:meth:`CudaStorage.export`, called once per spawned process: rebuilding one
tuple twice underflows torch's reference count, pytorch #149187), rebuilds it once in
:meth:`CudaBackend.attach` and holds the tensor for its life; a consumer never re-exports. The
device travels as its UUID and is mapped to the consumer's own index (``CUDA_VISIBLE_DEVICES``
may differ between processes, pytorch #149196). ``reduce_tensor`` is not a documented API: its
tuple is checked here (``_ARGS`` fields, the device at ``_DEVICE_AT``) and pinned by a test.

Release: a consumer synchronises and drops its tensor; the owner synchronises, drops the
block, then ``torch.cuda.ipc_collect()`` and ``empty_cache()``. The control block never lives
here (its placement is HOST). Notes and sources: ../shared/CUDA.md.
"""
from __future__ import annotations

import os
from dataclasses import replace

import torch

from ..errors import ConfigError
from .storage import StorageHandle, register_backend

BACKEND = "cuda-ipc"
_ARGS, _DEVICE_AT = 15, 6           # torch.multiprocessing.reductions.reduce_tensor, CUDA case


def expandable_segments_on(env=os.environ) -> bool:
    conf = ",".join(env.get(k, "") for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"))
    return "expandable_segments:true" in conf.replace(" ", "").lower()


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
    if len(args) != _ARGS:
        raise RuntimeError(f"torch {torch.__version__}: reduce_tensor gave {len(args)} fields for a CUDA "
                           f"tensor, shmopt.memory.cuda expects {_ARGS}")
    return tuple(args)


def rebuild(args: tuple, index: int) -> torch.Tensor:
    from torch.multiprocessing.reductions import rebuild_cuda_tensor
    args = list(args)
    args[_DEVICE_AT] = index
    return rebuild_cuda_tensor(*args)


def _no_fence() -> None:
    return None


def fence_for(device: str | torch.device):
    """A call that returns once this process's queued work on ``device`` is done (a no-op on
    the host): host counters are bumped only after it, so a counter never runs ahead of the
    bytes it counts."""
    device = torch.device(device)
    if device.type != "cuda":
        return _no_fence
    return torch.cuda.current_stream(device).synchronize


class CudaStorage:
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

    def export(self) -> StorageHandle:
        """A handle for one more consumer process (owner only)."""
        if not self.owner or self._buf is None:
            raise RuntimeError("only the owner of a CUDA arena block exports it, and only while it lives")
        return replace(self.handle, extra=(export_args(self._buf), device_uuid(self.device.index)))

    def sync(self) -> None:
        if self._buf is not None:
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        if self._buf is not None:
            self.sync()
            self._buf = None

    def unlink(self) -> None:
        if self.owner and self._buf is not None:
            self.close()
            torch.cuda.ipc_collect()
            torch.cuda.empty_cache()


class CudaBackend:
    def create(self, nbytes: int, device: torch.device, tag: str = "") -> CudaStorage:
        if not torch.cuda.is_available():
            raise ConfigError(f"no CUDA device for an arena on {device}: torch {torch.__version__} sees "
                              f"none here; use the cpu device")
        if expandable_segments_on():
            raise ConfigError("PYTORCH_CUDA_ALLOC_CONF turns expandable_segments on: a CUDA arena needs "
                              "it off (CUDA IPC of expandable segments fails in containers); unset it")
        # a first, large allocation is a cudaMalloc segment of its own; if the process allocated
        # before, torch still exports correctly (the segment plus this block's offset in it)
        buf = torch.zeros(max(nbytes, 1), dtype=torch.uint8, device=device)
        torch.cuda.synchronize(device)
        index = buf.device.index if buf.device.index is not None else torch.cuda.current_device()
        handle = StorageHandle(BACKEND, f"cuda:{device_uuid(index)}{':' + tag if tag else ''}", nbytes)
        return CudaStorage(buf, handle, owner=True)

    def attach(self, handle: StorageHandle) -> CudaStorage:
        if handle.extra is None:
            raise RuntimeError("a CUDA arena handle without attach arguments: the owner must export() "
                               "one per process")
        args, uuid = handle.extra
        return CudaStorage(rebuild(args, index_of(uuid)), handle, owner=False)


register_backend(BACKEND, CudaBackend(), "cuda")
