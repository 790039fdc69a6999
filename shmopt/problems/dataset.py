"""A map-style ``torch.utils.data.Dataset`` as the tuple of tensors a :class:`Problem` trains on.

A dataset of fewer than :data:`EAGER_BELOW` items is read once, item by item (``dataset[i]`` for
``i < len(dataset)``), and stacked: item ``i`` becomes row ``i`` of each tensor, which the engine
shares. A larger one is read per batch in the workers (:class:`~.sources.DatasetRows`): training
starts at once, whatever its length. ``Problem(eager=True/False)`` chooses either way.

An item is a tensor or a tuple/list of tensors and numbers. Values keep their dtype when it is one
the engine stores (float32, float16, uint8, int8-int64: an image of uint8 stays one byte a pixel)
and are converted per batch; float64 and numbers become float32 or int64.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import Tensor

from ..errors import ProblemError
from .sources import STORED_DTYPES, as_batch_tensor, fields_of

__all__ = ["materialise", "is_dataset", "EAGER_BELOW"]

#: map-style datasets shorter than this are read up front (about 1 s of cheap items), longer ones
#: per batch
EAGER_BELOW = 50_000

#: datasets at least this long print progress (to a terminal) while they are read
PROGRESS_FROM = 10_000


def is_dataset(obj: object) -> bool:
    """A map-style dataset: a ``torch.utils.data.Dataset`` with ``__len__`` (not a tuple of tensors)."""
    return (isinstance(obj, torch.utils.data.Dataset) and hasattr(obj, "__len__")
            and not isinstance(obj, torch.utils.data.IterableDataset))


def _as_tensor(value: Any, where: str) -> Tensor:
    """An item's field at the dtype it is stored in (its own when the engine stores it and no wider
    than the batch's: float64 becomes float32)."""
    if isinstance(value, Tensor) and value.dtype in STORED_DTYPES and value.dtype != torch.float64:
        return value.detach()
    return as_batch_tensor(value, where)


def materialise(dataset: Any, name: str, which: str) -> tuple[Tensor, ...]:
    """Read every item of ``dataset`` into contiguous tensors, one per item field."""
    n = len(dataset)
    if n == 0:
        raise ProblemError(f"problem {name!r}: the {which} dataset is empty")
    first = tuple(_as_tensor(v, f"problem {name!r}: {which} item 0 field {j}")
                  for j, v in enumerate(fields_of(dataset[0])))
    out = [torch.empty((n, *t.shape), dtype=t.dtype) for t in first]
    show = n >= PROGRESS_FROM and sys.stderr.isatty()
    t0, next_show = time.monotonic(), 0.0
    for i in range(n):
        fields = fields_of(dataset[i]) if i else first
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
