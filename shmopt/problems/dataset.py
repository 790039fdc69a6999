"""A map-style ``torch.utils.data.Dataset`` as the tuple of tensors a :class:`Problem` trains on.

The engine samples mini-batches by index from tensors in shared memory, so a dataset is read once,
item by item (``dataset[i]`` for ``i < len(dataset)``), and stacked: item ``i`` becomes row ``i``
of each tensor. An item is a tensor or a tuple/list of tensors and numbers. Floating-point and
``uint8`` values become float32 (values unchanged), other integers int64 (class labels).
"""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import Tensor

from ..errors import ProblemError

__all__ = ["materialise", "is_dataset"]

#: datasets at least this long print progress (to a terminal) while they are read
PROGRESS_FROM = 10_000


def is_dataset(obj: object) -> bool:
    """A map-style dataset: a ``torch.utils.data.Dataset`` with ``__len__`` (not a tuple of tensors)."""
    return isinstance(obj, torch.utils.data.Dataset) and hasattr(obj, "__len__")


def _as_tensor(value: Any, where: str) -> Tensor:
    if isinstance(value, Tensor):
        t = value.detach()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProblemError(f"{where} is a {type(value).__name__}; dataset items must hold tensors "
                           f"or numbers")
    else:
        t = torch.tensor(value)
    if t.is_floating_point() or t.dtype == torch.uint8:
        return t.to(torch.float32)
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise ProblemError(f"{where} has dtype {t.dtype}; accepted are floating, uint8 and integer values")
    return t.to(torch.int64)


def _fields(item: Any) -> tuple:
    return tuple(item) if isinstance(item, (tuple, list)) else (item,)


def materialise(dataset: Any, name: str, which: str) -> tuple[Tensor, ...]:
    """Read every item of ``dataset`` into contiguous tensors, one per item field."""
    n = len(dataset)
    if n == 0:
        raise ProblemError(f"problem {name!r}: the {which} dataset is empty")
    first = tuple(_as_tensor(v, f"problem {name!r}: {which} item 0 field {j}")
                  for j, v in enumerate(_fields(dataset[0])))
    out = [torch.empty((n, *t.shape), dtype=t.dtype) for t in first]
    show = n >= PROGRESS_FROM and sys.stderr.isatty()
    t0, next_show = time.monotonic(), 0.0
    for i in range(n):
        fields = _fields(dataset[i]) if i else first
        if len(fields) != len(out):
            raise ProblemError(f"problem {name!r}: {which} item {i} has {len(fields)} fields, item 0 "
                               f"has {len(out)}")
        for j, v in enumerate(fields):
            t = v if i == 0 else _as_tensor(v, f"problem {name!r}: {which} item {i} field {j}")
            if t.shape != out[j].shape[1:]:
                raise ProblemError(f"problem {name!r}: {which} item {i} field {j} has shape "
                                   f"{tuple(t.shape)}, item 0 {tuple(out[j].shape[1:])}; items must "
                                   f"have one shape")
            out[j][i] = t
        if show and time.monotonic() >= next_show:
            next_show = time.monotonic() + 0.5
            print(f"\rreading the {which} dataset: {i + 1:,}/{n:,}", end="", file=sys.stderr, flush=True)
    if show:
        print(f"\rreading the {which} dataset: {n:,}/{n:,} in {time.monotonic() - t0:.1f} s",
              file=sys.stderr, flush=True)
    return tuple(out)
