"""The rows a problem trains on, and how a mini-batch of them is read in a worker.

Two kinds of :class:`Rows`:

* :class:`TensorRows`: one tensor per field (``(X, y)``) with a common first dimension. A tensor in
  memory is copied once into the engine's shared memory *at its own dtype* (uint8 images stay one
  byte a pixel); a tensor that is a view of a file map (``np.load(path, mmap_mode="r")``,
  ``np.memmap``, ``torch.from_file(..., shared=True)``) is not copied at all: every worker maps the
  same file (:mod:`shmopt.memory.filemap`) and reads its rows through the page cache.
* :class:`DatasetRows`: a map-style ``torch.utils.data.Dataset`` read per batch in the worker
  (``dataset[i]`` for the batch's rows): no item is read before training starts.

A batch is converted on the way out: floating-point and uint8 fields become float32 (values
unchanged: scale images in the model or the loss), other integers int64 (class labels).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor

from ..errors import ProblemError
from ..memory.filemap import DataFileError, FileRegion, region_of

__all__ = ["Rows", "TensorRows", "DatasetRows", "ArenaColumn", "STORED_DTYPES", "batch_dtype",
           "as_batch_tensor", "fields_of"]

#: dtypes data may be stored in (converted per batch by :func:`batch_dtype`)
STORED_DTYPES = (torch.float32, torch.float16, torch.float64, torch.uint8, torch.int8, torch.int16,
                 torch.int32, torch.int64)
#: items of a DatasetRows hashed into its fingerprint (first, middle, last and these between)
FINGERPRINT_ITEMS = 16


def batch_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for floating-point and uint8 data, int64 for other integers."""
    return torch.float32 if dtype.is_floating_point or dtype == torch.uint8 else torch.int64


def as_batch_tensor(value: Any, where: str) -> Tensor:
    """A dataset item's field as a tensor of its batch dtype (ProblemError for anything else)."""
    if isinstance(value, Tensor):
        t = value.detach()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProblemError(f"{where} is a {type(value).__name__}; dataset items must hold tensors or numbers")
    else:
        t = torch.tensor(value)
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise ProblemError(f"{where} has dtype {t.dtype}; accepted are floating, uint8 and integer values")
    return t.to(batch_dtype(t.dtype))


def fields_of(item: Any) -> tuple:
    return tuple(item) if isinstance(item, (tuple, list)) else (item,)


@dataclass(frozen=True)
class ArenaColumn:
    """Placeholder for field ``i`` in the payload sent to workers: the engine's shared copy."""

    index: int


Column = Union[Tensor, FileRegion, ArenaColumn]


class Rows:
    """``n`` rows of ``len(shapes)`` fields; :meth:`take` reads a batch (converted)."""

    n: int
    shapes: tuple[tuple[int, ...], ...]      # per row, for each field
    dtypes: tuple[torch.dtype, ...]          # as stored

    def take(self, idx: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    @property
    def in_memory(self) -> tuple[Tensor, ...]:
        """The fields the engine copies into shared memory (in order)."""
        return ()

    def for_workers(self) -> "Rows":
        """What the workers are sent (pickled): the in-memory fields as placeholders."""
        return self

    def attach(self, shared: tuple[Tensor, ...]) -> "Rows":
        """In a worker: the rows, the placeholders resolved to the engine's shared tensors."""
        return self

    def head(self, k: int) -> tuple[Tensor, ...]:
        """The first ``min(k, n)`` rows, converted."""
        return self.take(torch.arange(min(k, self.n)))

    def first(self, batch: int) -> tuple[Tensor, ...]:
        """The first mini-batch (the checks before training run the loss on it)."""
        return self.head(batch)

    def fingerprint(self) -> str:
        raise NotImplementedError

    def check(self) -> None:
        """Before training: what can be checked without reading every row (ProblemError)."""

    def describe(self) -> str:
        raise NotImplementedError


class TensorRows(Rows):
    def __init__(self, columns: tuple[Column, ...]) -> None:
        self.columns = columns
        first = columns[0]
        self.n = int(first.shape[0])
        self.shapes = tuple(tuple(c.shape[1:]) for c in columns)
        self.dtypes = tuple(getattr(torch, c.dtype) if isinstance(c, FileRegion) else c.dtype
                            for c in columns)

    @classmethod
    def of(cls, tensors: tuple[Tensor, ...]) -> "TensorRows":
        """Tensors that are views of a file map become :class:`FileRegion` columns."""
        return cls(tuple(region_of(t) or t for t in tensors))

    @property
    def in_memory(self) -> tuple[Tensor, ...]:
        return tuple(c for c in self.columns if isinstance(c, Tensor))

    @property
    def mapped(self) -> tuple[FileRegion, ...]:
        return tuple(c for c in self.columns if isinstance(c, FileRegion))

    def for_workers(self) -> "TensorRows":
        out, i = [], 0
        for c in self.columns:
            if isinstance(c, Tensor):
                c, i = ArenaColumn(i), i + 1
            out.append(c)
        return TensorRows.__new__(TensorRows)._set(tuple(out), self)

    def _set(self, columns: tuple, like: "TensorRows") -> "TensorRows":
        self.columns, self.n, self.shapes, self.dtypes = columns, like.n, like.shapes, like.dtypes
        return self

    def attach(self, shared: tuple[Tensor, ...]) -> "TensorRows":
        return TensorRows.__new__(TensorRows)._set(
            tuple(shared[c.index] if isinstance(c, ArenaColumn) else c for c in self.columns), self)

    def take(self, idx: Tensor) -> tuple[Tensor, ...]:
        out = []
        for c, dtype in zip(self.columns, self.dtypes):
            t = (c.take(idx) if isinstance(c, FileRegion)
                 else c.index_select(0, idx.to(c.device, non_blocking=True)))
            out.append(t.to(batch_dtype(dtype)))
        return tuple(out)

    def check(self) -> None:
        for c in self.mapped:
            try:
                c.check()
            except DataFileError as exc:
                raise ProblemError(str(exc)) from None

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for c in self.columns:
            if isinstance(c, FileRegion):
                h.update(c.fingerprint().encode())
            else:
                h.update(str((tuple(c.shape), str(c.dtype))).encode())
                h.update(c.contiguous().numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        kinds = ["mapped from " + c.path if isinstance(c, FileRegion) else "in memory" for c in self.columns]
        return f"{self.n:,} rows; fields: " + ", ".join(kinds)


class DatasetRows(Rows):
    """A map-style dataset read per batch: item ``i`` is row ``i`` (a tensor, a number, or a tuple
    of them), each field with one shape; item 0 sets the shapes and dtypes."""

    def __init__(self, dataset: Any, name: str, which: str) -> None:
        self.dataset, self.name, self.which = dataset, name, which
        self.n = len(dataset)
        if self.n == 0:
            raise ProblemError(f"problem {name!r}: the {which} dataset is empty")
        first = self._item(0)
        self.shapes = tuple(tuple(t.shape) for t in first)
        self.dtypes = tuple(t.dtype for t in first)

    def _item(self, i: int) -> tuple[Tensor, ...]:
        where = f"problem {self.name!r}: {self.which} item {i}"
        try:
            item = self.dataset[i]
        except Exception as exc:
            raise ProblemError(f"{where} could not be read: {type(exc).__name__}: {exc}") from exc
        return tuple(as_batch_tensor(v, f"{where} field {j}") for j, v in enumerate(fields_of(item)))

    def take(self, idx: Tensor) -> tuple[Tensor, ...]:
        items = [self._item(int(i)) for i in idx]
        for i, item in zip(idx.tolist(), items):
            if len(item) != len(self.shapes) or any(tuple(t.shape) != s for t, s in zip(item, self.shapes)):
                raise ProblemError(f"problem {self.name!r}: {self.which} item {i} has fields of shapes "
                                   f"{[tuple(t.shape) for t in item]}, item 0 {list(self.shapes)}; items "
                                   f"must have one shape")
        return tuple(torch.stack([it[j].to(d) for it in items]) for j, d in enumerate(self.dtypes))

    def _spread(self) -> tuple[Tensor, ...]:
        """A few items spread over the dataset (first, middle, last and some between), read once."""
        if not hasattr(self, "_sampled"):
            step = max(self.n // FINGERPRINT_ITEMS, 1)
            spread = sorted({*range(0, self.n, step), self.n // 2, self.n - 1})
            self._sampled = self.take(torch.tensor(spread))
        return self._sampled

    def check(self) -> None:
        """Items spread over the dataset read, and of item 0's shapes (the rest is checked per batch)."""
        self._spread()

    def fingerprint(self) -> str:
        """The dataset's type and length, and a digest of a few items spread over it."""
        h = hashlib.sha256(f"{type(self.dataset).__qualname__}:{self.n}".encode())
        for t in self._spread():
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_sampled"}

    def describe(self) -> str:
        return f"{self.n:,} items of {type(self.dataset).__name__}, read per batch"
