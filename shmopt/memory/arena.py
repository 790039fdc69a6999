"""The arena: the named buffers of a :class:`~shmopt.memory.layout.Layout`, in storage blocks.

The owner (the supervisor, or a shared optimizer) calls :meth:`Arena.create`; other processes
:meth:`Arena.attach` with the picklable :class:`ArenaHandle`. ``tensor(name)`` is a torch view
made by torch from the storage's bytes (on the buffer's device: nothing is copied and every
process sees every write), ``array(name)`` a numpy view of a host buffer (the control block's
structured records), ``raw(name)`` its bytes (checkpoints). Only this layer owns bytes.
One storage block per region of the layout (:mod:`shmopt.memory.storage` is their contract): the
host block, and on a device arena the device block. An owner that passes ``describe`` makes its
arena readable by name alone: :class:`ArenaView` (``shmopt top``) maps such a host block
read-only (see :mod:`shmopt.memory.describe`; POSIX segments only, the names top can list).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .backends import attach_storage, create_storage
from .describe import make_trailer, read_trailer
from .layout import HOST, Layout
from .shm import ReadOnlySegment
from .storage import Storage, StorageHandle


@dataclass(frozen=True)
class ArenaHandle:
    storages: tuple[tuple[str, StorageHandle], ...]     # (region, handle)
    layout: Layout


@dataclass
class Arena:
    storages: dict[str, Storage]
    layout: Layout
    _arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def create(cls, layout: Layout, tag: str = "", describe: dict | None = None) -> "Arena":
        """New blocks for ``layout``; with ``describe`` (JSON-able), the host block also carries
        the layout and that dict past its last buffer, for readers by name (:class:`ArenaView`)."""
        trailer = make_trailer(layout, describe) if describe is not None else b""
        storages: dict[str, Storage] = {}
        try:
            for region, nbytes in layout.regions:
                extra = len(trailer) if region == HOST else 0
                storages[region] = create_storage(nbytes + extra, "cpu" if region == HOST else layout.device,
                                                  tag)
            if trailer:
                buf = storages[HOST].host_buffer()
                buf[len(buf) - len(trailer):] = trailer
        except BaseException:
            for s in storages.values():
                s.unlink()
                s.close()
            raise
        return cls(storages, layout)

    @classmethod
    def attach(cls, handle: ArenaHandle) -> "Arena":
        return cls({region: attach_storage(h) for region, h in handle.storages}, handle.layout)

    @classmethod
    def open(cls, name: str) -> tuple["Arena", dict]:
        """Attach, writable and untracked, to the host arena named ``name`` that was created with a
        description, by its name alone (a process that got no handle); (arena, description).
        FileNotFoundError (no such segment), LookupError (no description), TypeError (a device
        arena: pass its handle)."""
        view = ArenaView(name)
        try:
            layout, meta = view.layout, view.meta
        finally:
            view.close()
        if any(region != HOST for region, _ in layout.regions):
            raise TypeError(f"arena {name} has a device region: attach it by its handle, not by name")
        nbytes = dict(layout.regions)[HOST]
        return cls.attach(ArenaHandle(((HOST, StorageHandle("shm", name, nbytes)),), layout)), meta

    @property
    def handle(self) -> ArenaHandle:
        return ArenaHandle(tuple((r, s.handle) for r, s in self.storages.items()), self.layout)

    def export(self) -> ArenaHandle:
        """A handle for one more process to attach: call this for every process started,
        respawns included, and give each its own (a CUDA block is exported once per consumer)."""
        return ArenaHandle(tuple((r, s.export()) for r, s in self.storages.items()), self.layout)

    def sync(self) -> None:
        """Wait for this process's work on the arena's device (a no-op on the host)."""
        for s in self.storages.values():
            s.sync()

    @property
    def storage(self) -> Storage:
        """The host block (the control block is always there)."""
        return self.storages[HOST]

    @property
    def name(self) -> str:
        return self.storage.handle.name

    @property
    def device(self) -> torch.device:
        return torch.device(self.layout.device)

    def __contains__(self, name: str) -> bool:
        return name in self.layout

    def raw(self, name: str) -> torch.Tensor:
        """The bytes of a buffer as a ``torch.uint8`` view on its device."""
        e = self.layout[name]
        return self.storages[e.region].bytes(e.offset, e.nbytes)

    def own_bytes(self, name: str) -> torch.Tensor:
        """The bytes of a host buffer as a ``torch.uint8`` tensor whose storage is exactly them
        (shared, not copied): ``torch.save`` writes these bytes straight from shared memory, where
        it would write the whole block for a :meth:`raw` view. Drop it before :meth:`close`."""
        e = self.layout[name]
        if e.region != HOST:
            raise TypeError(f"arena buffer {name!r} is on {self.layout.device}: copy it with raw()")
        if not e.nbytes:
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(self.storage.host_buffer()[e.offset:e.offset + e.nbytes], dtype=torch.uint8)

    def array(self, name: str) -> np.ndarray:
        """numpy view of a host buffer (structured dtypes included)."""
        arr = self._arrays.get(name)
        if arr is None:
            e = self.layout[name]
            if e.region != HOST:
                raise TypeError(f"arena buffer {name!r} is on {self.layout.device}: use tensor()")
            arr = np.ndarray(e.shape, dtype=e.dtype, buffer=self.storage.host_buffer(), offset=e.offset)
            self._arrays[name] = arr
        return arr

    def tensor(self, name: str) -> torch.Tensor:
        """torch view of a numeric buffer on its device (shares memory with every process)."""
        t = self._tensors.get(name)
        if t is None:
            e = self.layout[name]
            if e.structured:
                raise TypeError(f"arena buffer {name!r} holds records: use array()")
            t = self.raw(name).view(e.torch_dtype).view(e.shape)
            self._tensors[name] = t
        return t

    def release_device(self) -> None:
        """Drop this process's views of the device region and detach from it (a consumer at exit;
        the host region, with the control block, stays)."""
        for name in [n for n in self._tensors if self.layout[n].region != HOST]:
            del self._tensors[name]
        for region in [r for r in self.storages if r != HOST]:
            self.storages.pop(region).close()

    def close(self, unlink: bool = True) -> None:
        """Drop this process's views, remove the blocks (owner) and detach. Idempotent."""
        self._tensors.clear()
        self._arrays.clear()
        for s in self.storages.values():
            if unlink:
                s.unlink()
            s.close()


class ArenaView:
    """A read-only view, by name, of the host block of an arena created with ``describe``
    (``shmopt top``): numpy views of its host buffers that cannot be written, the owner's
    description in :attr:`meta`; no resource-tracker registration, so opening and closing it never
    removes the segment. Raises FileNotFoundError (no such segment) or LookupError (a segment
    without a description)."""

    def __init__(self, name: str) -> None:
        self.segment = ReadOnlySegment(name)
        found = read_trailer(self.segment.buf)
        if found is None:
            self.segment.close()
            raise LookupError(f"shared-memory segment {name} carries no arena description")
        self.layout, self.meta = found
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.segment.name

    def __contains__(self, name: str) -> bool:
        return name in self.layout

    def array(self, name: str) -> np.ndarray:
        """Read-only numpy view of a host buffer."""
        arr = self._arrays.get(name)
        if arr is None:
            e = self.layout[name]
            if e.region != HOST:
                raise TypeError(f"arena buffer {name!r} is on {self.layout.device}, not readable here")
            arr = np.ndarray(e.shape, dtype=e.dtype, buffer=self.segment.buf, offset=e.offset)
            self._arrays[name] = arr
        return arr

    def close(self) -> None:
        """Drop the views and unmap (idempotent)."""
        self._arrays.clear()
        self.segment.close()
