"""The arena: named, 64-byte aligned buffers in one shared storage block.

A :class:`Layout` is a picklable list of ``(name, shape, numpy dtype)`` entries with computed
offsets. The supervisor creates the :class:`Arena` (``Arena.create``), workers attach with the
picklable :class:`ArenaHandle`. ``tensor(name)`` gives a torch view and ``array(name)`` a numpy
view of the same bytes: nothing is copied, every process sees every write.

Buffers the engine lays out (see ``engine.layout``): flat float32 parameters (one copy, or one
replica per worker), rule state (``m``, ``v``, ``vmax``...), per-worker snapshots and gradient
slots, the problem's data tensors, and the control block (numpy structured arrays, one
cache-line-padded slot per writer).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .storage import ShmStorage, StorageHandle

ALIGN = 64


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class Layout:
    entries: tuple[Entry, ...] = ()
    nbytes: int = 0

    @staticmethod
    def build(specs: list[tuple[str, tuple[int, ...], object]]) -> "Layout":
        entries, offset, seen = [], 0, set()
        for name, shape, dtype in specs:
            if name in seen:
                raise ValueError(f"duplicate arena buffer {name!r}")
            seen.add(name)
            entry = Entry(name, tuple(int(s) for s in shape), np.dtype(dtype), offset)
            entries.append(entry)
            offset += -(-max(entry.nbytes, 1) // ALIGN) * ALIGN
        return Layout(tuple(entries), offset)

    def __getitem__(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return any(e.name == name for e in self.entries)


@dataclass(frozen=True)
class ArenaHandle:
    storage: StorageHandle
    layout: Layout


@dataclass
class Arena:
    storage: ShmStorage
    layout: Layout
    _arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def create(cls, layout: Layout) -> "Arena":
        arena = cls(ShmStorage.create(layout.nbytes), layout)
        return arena

    @classmethod
    def attach(cls, handle: ArenaHandle) -> "Arena":
        return cls(ShmStorage.attach(handle.storage), handle.layout)

    @property
    def handle(self) -> ArenaHandle:
        return ArenaHandle(self.storage.handle, self.layout)

    @property
    def name(self) -> str:
        return self.storage.handle.name

    def array(self, name: str) -> np.ndarray:
        """numpy view of a buffer (structured dtypes included)."""
        arr = self._arrays.get(name)
        if arr is None:
            e = self.layout[name]
            arr = np.ndarray(e.shape, dtype=e.dtype, buffer=self.storage.buf, offset=e.offset)
            self._arrays[name] = arr
        return arr

    def tensor(self, name: str) -> torch.Tensor:
        """torch view of a numeric buffer (shares memory with every process)."""
        t = self._tensors.get(name)
        if t is None:
            t = torch.from_numpy(self.array(name))
            self._tensors[name] = t
        return t

    def close(self, unlink: bool = True) -> None:
        """Drop this process's views, remove the name (owner) and detach. Idempotent."""
        self._tensors.clear()
        self._arrays.clear()
        if unlink:
            self.storage.unlink()
        self.storage.close()
