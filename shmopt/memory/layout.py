"""Arena layouts: named, aligned buffers, each with a placement.

A :class:`Layout` is a picklable tuple of :class:`Entry` (name, shape, numpy dtype, placement,
region, offset). The placement says where a buffer must live: ``HOST`` (the control block:
numpy structured records read and written by the CPU of every process) or ``DEVICE`` (parameters,
rule state, snapshots, gradient slots, data: where the model computes). The region is where it
does live: one storage block per region, offsets counted per region, aligned to ``ALIGN`` bytes
in the host region (64: a cache line, so two processes' records never share one) and to
``DEVICE_ALIGN`` in the device region (256: CUDA's allocation alignment, which vectorised kernels
expect of every view). On a CPU arena the device region is the host region, so the whole arena is
one block.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

HOST, DEVICE = "host", "device"
ALIGN = 64
DEVICE_ALIGN = 256

Spec = tuple  # (name, shape, dtype) or (name, shape, dtype, placement)


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    placement: str = DEVICE
    region: str = HOST
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def structured(self) -> bool:
        return self.dtype.fields is not None

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.from_numpy(np.empty(0, dtype=self.dtype)).dtype


@dataclass(frozen=True)
class Layout:
    entries: tuple[Entry, ...] = ()
    regions: tuple[tuple[str, int], ...] = ()     # (region, nbytes), in creation order
    device: str = "cpu"

    @staticmethod
    def build(specs: list[Spec], device: str | torch.device = "cpu") -> "Layout":
        """Lay out ``specs`` for buffers computed on ``device`` (HOST entries stay on the host)."""
        device = str(torch.device(device))
        on_host = torch.device(device).type == "cpu"
        entries, sizes, seen = [], {HOST: 0}, set()
        for spec in specs:
            name, shape, dtype = spec[:3]
            placement = spec[3] if len(spec) > 3 else DEVICE
            if name in seen:
                raise ValueError(f"duplicate arena buffer {name!r}")
            if placement not in (HOST, DEVICE):
                raise ValueError(f"invalid placement {placement!r} of arena buffer {name!r}")
            seen.add(name)
            region = HOST if on_host or placement == HOST else DEVICE
            align = ALIGN if region == HOST else DEVICE_ALIGN
            offset = sizes.setdefault(region, 0)
            entry = Entry(name, tuple(int(s) for s in shape), np.dtype(dtype), placement, region, offset)
            if entry.structured and region != HOST:
                raise ValueError(f"arena buffer {name!r} is a structured record: it must be on the host")
            entries.append(entry)
            sizes[region] = offset + -(-max(entry.nbytes, 1) // align) * align
        return Layout(tuple(entries), tuple(sizes.items()), device)

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self.regions)

    def __getitem__(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return any(e.name == name for e in self.entries)
