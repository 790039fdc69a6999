"""The storage contract: what a backend (where an arena's bytes live) and its blocks must give.

Two protocols, written out so that nothing above them probes a block for optional methods:

* :class:`Storage`, one block of bytes seen by one process: the owner's (``create``) or an
  attachment (``attach``);
* :class:`Backend`, one kind of block and the device type it serves: it makes and attaches
  blocks, and it answers the device questions the rest of shmopt asks about that type
  (validating ``--device``, how many devices are visible, the fence, stable device ids).

Every backend implements all of both; the ones that have nothing to do say so in the method
(the host backend's ``sync`` is a no-op, its ``export`` returns its handle). The backends are
listed in :mod:`shmopt.memory.backends`, which dispatches on a device type or a handle's name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass(frozen=True)
class StorageHandle:
    """Picklable reference to a block: enough for another process to attach."""

    backend: str                # the name of the Backend that attaches it
    name: str                   # the block's name (host: the segment name; readable by top)
    nbytes: int                 # the bytes asked for (the block may be larger)
    extra: Any = None           # backend-specific attach data (e.g. CUDA IPC arguments)


class Storage(Protocol):
    """One block of bytes, as one process holds it.

    Ownership: exactly one process, the creator, is the owner (``owner`` True); it alone removes
    the block (:meth:`unlink`). Attachments never remove it, nor register anything that would
    remove it when they exit. A block must outlive every attachment: the owner unlinks only after
    its consumers are gone (or dead).
    """

    handle: StorageHandle       # this block's own handle (``handle.backend`` names its backend)
    device: torch.device        # where the bytes live
    owner: bool                 # True in the creating process until it unlinks

    def bytes(self, offset: int, nbytes: int) -> torch.Tensor:
        """A ``torch.uint8`` view of ``nbytes`` bytes at ``offset``, on :attr:`device`, sharing
        the block: every typed view of the arena is made from it by torch, nothing is copied and
        every process sees every write. RuntimeError once the block is closed."""
        ...

    def host_buffer(self) -> memoryview:
        """The whole block as a writable memoryview (numpy views of the control block's records).
        Host blocks only: a device block raises TypeError."""
        ...

    def fileno(self) -> int:
        """A file descriptor of the block, valid until :meth:`close` (``flock`` on it serialises
        processes, e.g. the step counter's slot claims). Host blocks only: TypeError otherwise."""
        ...

    def export(self) -> StorageHandle:
        """The handle for one more consumer process. Call it once per process started, respawns
        included, and send that process its own handle: the consumer attaches once, holds the
        block for its life and never exports it further. A host block returns :attr:`handle`
        (any holder, any number of times). A device block may return fresh attach arguments
        every call and only in the owner, while the block lives (RuntimeError otherwise)."""
        ...

    def sync(self) -> None:
        """Return once the work this process queued on the block's device is done (not other
        processes' work): after it, a host counter may say the bytes are there. The owner calls
        it before the first export, so the initial contents are complete. A no-op on the host."""
        ...

    def close(self) -> None:
        """Detach this process: drop its mapping or reference (after :meth:`sync`), so views made
        from :meth:`bytes` must not be used afterwards. Never removes the block. Idempotent."""
        ...

    def unlink(self) -> None:
        """Owner: remove the block, so nothing of it outlives the last process that holds it (a
        host name disappears at once, mappings stay valid until closed; a device block is freed
        when the last consumer has dropped it). A no-op in an attachment. Idempotent; allowed
        before or after :meth:`close`."""
        ...


class Backend(Protocol):
    """One kind of block, and the device type whose arenas it holds.

    :mod:`shmopt.memory.backends` lists the backends; the first one listed for a device type
    creates that type's blocks, and every listed one attaches the handles that carry its
    :attr:`name`. The device methods never initialise the device's runtime (a fork server or
    the supervisor may fork afterwards), except :meth:`fence`, :meth:`device_id` and
    :meth:`local_index`, which are called where the device is used anyway.
    """

    name: str           # unique; StorageHandle.backend of its blocks ("shm", "cuda-ipc")
    device_type: str    # the torch device type it serves ("cpu", "cuda")
    label: str          # the device type in users' messages ("host", "CUDA")

    def create(self, nbytes: int, device: torch.device, tag: str = "") -> Storage:
        """A new zero-filled block of at least ``nbytes`` bytes on ``device``, owned by this
        process. ``tag`` (1-16 lowercase letters or digits, e.g. the node rank) goes into its
        name (ValueError otherwise). Raises ConfigError (ShmSpaceError on the host) naming what
        is missing, and then holds nothing."""
        ...

    def attach(self, handle: StorageHandle) -> Storage:
        """The block of an exported ``handle``, in this process, not owned. Once per handle."""
        ...

    def device_count(self) -> int:
        """How many devices of :attr:`device_type` this process sees (0: none)."""
        ...

    def resolve(self, text: str, index: int | None, visible: int, nnodes: int) -> str:
        """The torch device string (``"cuda:1"``) for ``--device text`` (its index parsed,
        None when none was given), with ``visible`` devices of this type and ``nnodes`` nodes;
        ConfigError with one line that names what was wrong (no device, index out of range,
        an environment this backend refuses)."""
        ...

    def fence(self, device: torch.device) -> Callable[[], None]:
        """A call that returns once this process's queued work on ``device`` is done. The engine
        calls it before every host counter that counts device work, so a counter never runs
        ahead of the bytes it counts; on the host it does nothing."""
        ...

    def device_id(self, index: int) -> str:
        """A stable id of this process's device ``index``, the same in every process whatever
        each one's device numbering (``CUDA_VISIBLE_DEVICES`` may differ)."""
        ...

    def local_index(self, device_id: str) -> int:
        """This process's index of the device :meth:`device_id` named; RuntimeError when it is
        not visible here."""
        ...
