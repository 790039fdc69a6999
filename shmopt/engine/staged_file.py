"""The file a checkpoint is written to: every byte goes through one private, page-aligned staging
buffer, which is hashed (SHA-256) and written with ``O_DIRECT`` where the file system allows it.

The staging buffer is needed anyway: a live checkpoint's shared bytes change while they are
written, and the digest must be of what the file holds. Writing it with ``O_DIRECT`` then spares
the page cache: without it the kernel copies every byte into the cache, allocates and writes those
pages back, and a checkpoint of gigabytes evicts as much of other programs' cached files. That
kernel work runs on the cores the workers train on (bench/test_checkpoint_cost.py measures it).

``O_DIRECT`` needs the buffer's address, the file offset and the length aligned to the device's
block: the buffer is page-aligned and written whole, so every write but the last is; the last,
partial one is written after ``O_DIRECT`` is cleared. A file system that refuses ``O_DIRECT``
(``EINVAL`` from ``fcntl`` or from a write) is written through the cache from then on.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os

CHUNK = 8 << 20                           # bytes staged, hashed and written at a time
ALIGN = 4096                              # the largest logical block size O_DIRECT may require
O_DIRECT = getattr(os, "O_DIRECT", 0)     # Linux only; elsewhere every write is cached


class StagedFile:
    """A write-only file object over ``fd`` (for ``torch.save``) that hashes what it writes.
    :meth:`finish` writes what is staged, fsyncs and returns the hex digest; :meth:`close`
    releases the buffer and the descriptor (always call it). ``error``: the ``OSError`` a write
    raised (``torch.save`` reports it as a ``RuntimeError`` about the zip's position)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.sha, self.n = fd, hashlib.sha256(), 0
        self.error: OSError | None = None
        try:
            self._buf = mmap.mmap(-1, CHUNK)
            self.direct = bool(O_DIRECT) and self._set_direct(True)
        except BaseException:
            os.close(fd)
            raise
        self._view = memoryview(self._buf)

    def _set_direct(self, on: bool) -> bool:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | O_DIRECT if on else flags & ~O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return False
        return on

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            k = min(len(view) - done, CHUNK - self.n)
            self._view[self.n:self.n + k] = view[done:done + k]
            self.n, done = self.n + k, done + k
            if self.n == CHUNK:
                self._emit()
        return len(view)

    def flush(self) -> None:
        """Nothing to do: bytes are written as the buffer fills (``torch.save`` calls this)."""

    def _emit(self) -> None:
        with self._view[:self.n] as staged:       # released even when a write raises
            self.sha.update(staged)
            if self.direct and self.n % ALIGN:
                self.direct = self._set_direct(False)      # the last, partial block
            done = 0
            while done < self.n:
                try:
                    done += os.write(self.fd, staged[done:])
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self.direct:
                        self.error = exc
                        raise
                    self.direct = self._set_direct(False)  # refused (alignment, file system): cached
        self.n = 0

    def finish(self) -> str:
        """Write what is staged, fsync; the SHA-256 of everything written."""
        if self.n:
            self._emit()
        os.fsync(self.fd)
        return self.sha.hexdigest()

    def close(self) -> None:
        try:
            self._view.release()
            self._buf.close()
        except BufferError:     # a slice still held (by a write error's traceback): freed with it
            pass
        finally:
            os.close(self.fd)
