"""Data that lives in a file: a region of a file mapped read-only by every process.

A tensor that is a view of a file map (``np.load(path, mmap_mode="r")``, ``np.memmap``,
``torch.from_file(..., shared=True)``, ``torch.from_numpy`` of one of these) is recognised from the
process's own map table (``/proc/self/maps``: the mapping that holds the tensor's bytes, its file,
device and inode); :class:`FileRegion` names that region, pickles in a few bytes, and in another
process maps the same pages (:meth:`FileRegion.array`): no copy into shared memory, every process
reads through the page cache, and a file larger than RAM works (pages come and go). A private
writable mapping (``mmap_mode="c"``: copy-on-write) is a file region only while none of its pages
has been written (``/proc/self/smaps`` counts no anonymous page in it).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch

MAPS = "/proc/self/maps"
SMAPS = "/proc/self/smaps"
#: bytes of a file hashed for its fingerprint: the head, the tail and SAMPLE_BLOCKS blocks between
SAMPLE_BYTES = 1 << 20
SAMPLE_BLOCKS = 256
BLOCK = 4096


class DataFileError(ValueError):
    """A data file that is missing, of the wrong size, or changed while the run uses it."""


def _mappings():
    try:
        with open(MAPS, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
    except OSError:                       # no /proc (not Linux): no file regions are recognised
        return
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        start, end = (int(a, 16) for a in parts[0].split("-"))
        yield start, end, parts[1], int(parts[2], 16), int(parts[4]), parts[5].rstrip("\n")


def region_of(t: torch.Tensor) -> "FileRegion | None":
    """The file region a contiguous CPU tensor is a view of, or None (memory of its own)."""
    if t.device.type != "cpu" or not t.is_contiguous() or t.numel() == 0:
        return None
    ptr, nbytes = t.data_ptr(), t.numel() * t.element_size()
    for start, end, perms, offset, inode, path in _mappings():
        if not start <= ptr < end:
            continue
        if ptr + nbytes > end or path.endswith(" (deleted)"):
            return None                   # spans mappings, or a file since removed
        if perms[3] != "s" and "w" in perms and not _unwritten(start):
            return None                   # copy-on-write, and written: its pages are not the file's
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_ino != inode:
            return None
        return FileRegion(path, offset + ptr - start, tuple(t.shape), str(t.dtype).removeprefix("torch."),
                          st.st_size, st.st_mtime_ns)
    return None


def _unwritten(start: int) -> bool:
    """No page of the private mapping at ``start`` has been copied on a write."""
    head = f"{start:x}-"
    try:
        with open(SMAPS, encoding="utf-8", errors="surrogateescape") as f:
            inside = False
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    inside = line.startswith(head)
                elif inside and line.startswith("Anonymous:"):
                    return int(line.split()[1]) == 0
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class FileRegion:
    """``shape`` values of ``dtype`` at byte ``offset`` of the file at ``path`` (with the size and
    modification time it had when recognised: a worker refuses a file that changed since)."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: str                            # torch's name: "uint8", "float16", ...
    size: int
    mtime_ns: int
    _array: list = field(default_factory=list, compare=False, repr=False)    # this process's map

    @property
    def np_dtype(self) -> np.dtype:
        return torch.empty(0, dtype=getattr(torch, self.dtype)).numpy().dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.np_dtype.itemsize

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = []              # a map is per process
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def check(self) -> None:
        """DataFileError when the file is gone, smaller than the region, or changed."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise DataFileError(f"data file {self.path} cannot be read ({exc.strerror})") from None
        if st.st_size < self.offset + self.nbytes:
            raise DataFileError(f"data file {self.path} has {st.st_size:,} bytes, fewer than the "
                                f"{self.offset + self.nbytes:,} its rows need")
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            raise DataFileError(f"data file {self.path} changed while the run uses it (size or "
                                f"modification time)")

    def array(self) -> np.ndarray:
        """A read-only map of the region in this process (made once)."""
        if not self._array:
            self.check()
            self._array.append(np.memmap(self.path, dtype=self.np_dtype, mode="r", offset=self.offset,
                                         shape=self.shape))
        return self._array[0]

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (a private copy read through the page cache)."""
        return torch.from_numpy(np.ascontiguousarray(self.array()[idx.numpy()]))

    def fingerprint(self) -> str:
        """A digest of the region's shape, dtype and sampled content (head, tail, evenly spaced
        blocks): the same data moved or touched keeps it; rewritten rows almost surely change it."""
        h = hashlib.sha256(repr((self.shape, self.dtype)).encode())
        with open(self.path, "rb") as f:
            end = self.offset + self.nbytes
            spots = [self.offset, max(self.offset, end - SAMPLE_BYTES)]
            step = max(self.nbytes // SAMPLE_BLOCKS, BLOCK)
            for at, size in [(s, SAMPLE_BYTES) for s in spots] + [
                    (p, BLOCK) for p in range(self.offset, end, step)]:
                f.seek(at)
                h.update(f.read(min(size, end - at)))
        return h.hexdigest()
