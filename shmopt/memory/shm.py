"""The POSIX shared-memory storage backend (``multiprocessing.shared_memory``), for host arenas.

Lifecycle rules:

* names are ``shmopt_<owner pid>_[<tag>_]<16 random hex digits>`` (tag ``n<R>``: the node rank
  across nodes): recognisable, owner-stamped (so segments of dead owners can be swept) and
  unguessable; POSIX segments are created with mode 0600;
* only the creator registers the segment with multiprocessing's resource tracker (which also
  unlinks it if the creator is SIGKILLed); children attach *untracked* (``track=False`` on
  Python >= 3.13, registration suppressed before);
* free space in /dev/shm is checked before allocating: tmpfs allocates lazily and a full /dev/shm
  would otherwise kill a worker with SIGBUS long after start.
"""
from __future__ import annotations

import mmap
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from multiprocessing import resource_tracker, shared_memory

import torch

from ..errors import ShmSpaceError
from .storage import StorageHandle

PREFIX = "shmopt_"
SHM_DIR = "/dev/shm"
_NAME_RE = re.compile(r"^shmopt_(\d+)_(?:[a-z0-9]{1,16}_)?[0-9a-f]{16}$")
_TAG_RE = re.compile(r"^[a-z0-9]{1,16}$")
_ZOMBIES: list[shared_memory.SharedMemory] = []   # detached-but-still-exported mappings (see close)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError  # pragma: no cover


def shm_free_bytes() -> int | None:
    """Free bytes in /dev/shm, or None where there is no such directory (non-Linux)."""
    if not os.path.isdir(SHM_DIR):
        return None
    return shutil.disk_usage(SHM_DIR).free


def check_shm_space(nbytes: int, margin: float = 1.05) -> None:
    """Raise ShmSpaceError when /dev/shm cannot hold ``nbytes`` (plus a 5% margin)."""
    free = shm_free_bytes()
    if free is not None and nbytes * margin > free:
        raise ShmSpaceError(
            f"not enough shared memory: the arena needs {fmt_bytes(nbytes)} but {SHM_DIR} has "
            f"{fmt_bytes(free)} free; in Docker start the container with a larger --shm-size "
            f"(e.g. --shm-size=2g) or --ipc=host, or use fewer workers or a smaller model")


class ShmStorage:
    """A POSIX shared-memory block (``multiprocessing.shared_memory``): the
    :class:`~shmopt.memory.storage.Storage` of host arenas. Made by :class:`ShmBackend`."""

    device = torch.device("cpu")

    def __init__(self, shm: shared_memory.SharedMemory, nbytes: int, owner: bool) -> None:
        self._shm = shm
        self._closed = False
        self.owner = owner
        self.handle = StorageHandle(ShmBackend.name, shm.name, nbytes)
        self._u8: torch.Tensor | None = None

    def host_buffer(self) -> memoryview:
        if self._closed:
            raise RuntimeError("storage is closed")
        return self._shm.buf

    def bytes(self, offset: int, nbytes: int) -> torch.Tensor:
        """A ``torch.uint8`` view of ``nbytes`` bytes at ``offset`` (shares the segment)."""
        if self._u8 is None:
            self._u8 = torch.frombuffer(self.host_buffer(), dtype=torch.uint8)
        return self._u8[offset:offset + nbytes]

    def fileno(self) -> int:
        """The segment's file descriptor (for ``flock``)."""
        return self._shm._fd  # type: ignore[attr-defined]

    def export(self) -> StorageHandle:
        """The handle itself: a segment is attached by name, by any number of processes."""
        return self.handle

    def sync(self) -> None:
        """Nothing to wait for: a store to host shared memory is in the shared pages once made."""

    def close(self) -> None:
        """Detach; idempotent. If views are still exported the mapping is kept alive until
        process exit (unlink the name first, so nothing is left behind in /dev/shm)."""
        if self._closed:
            return
        self._closed = True
        self._u8 = None
        try:
            self._shm.close()
        except BufferError:
            _ZOMBIES.append(self._shm)

    def unlink(self) -> None:
        """Remove the name (owner only); idempotent; works before or after close."""
        if not self.owner:
            return
        self.owner = False
        try:
            self._shm.unlink()
        except FileNotFoundError:   # removed by someone else (a sweep): keep the tracker's books
            try:
                resource_tracker.unregister(self._shm._name, "shared_memory")  # type: ignore[attr-defined]
            except Exception:
                pass


def _no_fence() -> None:
    return None


class ShmBackend:
    """The :class:`~shmopt.memory.storage.Backend` of host (``cpu``) arenas. The host is one
    device that is always there; its device methods are trivial."""

    name = "shm"
    device_type = "cpu"
    label = "host"

    def create(self, nbytes: int, device: torch.device | None = None, tag: str = "") -> ShmStorage:
        """A new segment; ``tag`` (e.g. ``n1``, the node rank) goes into its name."""
        if tag and not _TAG_RE.match(tag):
            raise ValueError(f"invalid segment tag {tag!r}: 1-16 lowercase letters or digits")
        check_shm_space(nbytes)
        name = f"{PREFIX}{os.getpid()}_{tag + '_' if tag else ''}{secrets.token_hex(8)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=max(nbytes, 1))
        return ShmStorage(shm, nbytes, owner=True)

    def attach(self, handle: StorageHandle) -> ShmStorage:
        if sys.version_info >= (3, 13):
            shm = shared_memory.SharedMemory(name=handle.name, track=False)
        else:
            # Children must not register: the tracker would unlink the segment (or warn about a
            # "leak") when the child exits. Workers are single-threaded when they attach.
            register = resource_tracker.register
            resource_tracker.register = lambda *a, **k: None
            try:
                shm = shared_memory.SharedMemory(name=handle.name)
            finally:
                resource_tracker.register = register
        return ShmStorage(shm, handle.nbytes, owner=False)

    def device_count(self) -> int:
        return 1

    def resolve(self, text: str, index: int | None, visible: int, nnodes: int) -> str:
        return "cpu"

    def fence(self, device: torch.device) -> Callable[[], None]:
        return _no_fence

    def device_id(self, index: int) -> str:
        return "host"

    def local_index(self, device_id: str) -> int:
        return 0


BACKEND = ShmBackend()


class ReadOnlySegment:
    """A segment mapped read-only by name (``shmopt top``): the mapping refuses writes (a numpy
    view of it is not writeable), and nothing is registered with the resource tracker, so this
    process never unlinks the segment nor reports it as leaked. The owner may unlink the name at
    any time; the pages stay readable here until :meth:`close`."""

    def __init__(self, name: str) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"not a shmopt segment name: {name!r}")
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            self._mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
        finally:
            os.close(fd)                   # the mapping stays valid without the descriptor
        self.name = name
        self.size = size

    @property
    def buf(self) -> memoryview:
        if self._mm is None:
            return memoryview(b"")
        return memoryview(self._mm)

    def close(self) -> None:
        """Unmap; idempotent. With views still exported the mapping lives until they are gone."""
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass
            self._mm = None


def run_id(name: str) -> str | None:
    """The random part of a segment name: what tells two runs of one owner apart."""
    return name.rsplit("_", 1)[1] if _NAME_RE.match(name) else None


def owner_pid(name: str) -> int | None:
    m = _NAME_RE.match(name)
    return int(m.group(1)) if m else None


def list_segments() -> list[str]:
    """Names of every shmopt segment in /dev/shm (any owner)."""
    if not os.path.isdir(SHM_DIR):
        return []
    return sorted(n for n in os.listdir(SHM_DIR) if _NAME_RE.match(n))


def pid_alive(pid: int) -> bool:
    """Is a process with this pid alive (or at least not ours to signal)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_segments(all_owners: bool = False) -> list[str]:
    """Remove shmopt segments whose owner process is dead (or every one, with ``all_owners``).

    Returns the removed names. Segments of live owners are never touched unless asked.
    """
    removed = []
    for name in list_segments():
        pid = owner_pid(name)
        if pid is None or (not all_owners and (pid == os.getpid() or pid_alive(pid))):
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed

