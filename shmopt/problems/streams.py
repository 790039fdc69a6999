"""Streaming data: a ``torch.utils.data.IterableDataset`` (or a zero-argument function returning an
iterator) that every worker reads in order, B items a batch.

As with torch's DataLoader, the stream shards itself: it is iterated in each worker, where
``shmopt.worker_info()`` says which learner this is (``learner`` of ``learners``, over all nodes),
and :func:`shard_stream` keeps every ``learners``-th item from the ``learner``-th on. Outside a
worker (the checks before training, the evaluations) ``worker_info()`` is None and the stream is
read whole. When a worker's stream ends it starts again (a new pass). The position (passes begun,
items read in this pass) is kept in the worker's control slot, so a checkpoint holds it and a
resumed worker skips what it had read (it reads the items again and drops them).
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor

from ..errors import ProblemError
from ..strategies.position import new_pass
from .sources import Rows, as_batch_tensor, fields_of
from .worker_info import worker_info

__all__ = ["StreamRows", "StreamReader", "is_stream", "shard_stream"]


def is_stream(obj: object) -> bool:
    """An IterableDataset, or a function that returns an iterator (not a tuple, tensor or dataset)."""
    if isinstance(obj, torch.utils.data.IterableDataset):
        return True
    return callable(obj) and not isinstance(obj, (tuple, list, Tensor, torch.utils.data.Dataset))


def shard_stream(items: Iterable[Any]) -> Iterator[Any]:
    """This learner's share of ``items``: every ``learners``-th item from the ``learner``-th on
    (all of them outside a worker)."""
    info = worker_info()
    if info is None:
        return iter(items)
    return itertools.islice(items, info.learner, None, info.learners)


class StreamRows(Rows):
    """Rows of unknown number, read in order (``n`` is None)."""

    n = None

    def __init__(self, stream: Any, name: str, which: str) -> None:
        self.stream, self.name, self.which = stream, name, which
        first = next(self.items(), None)
        if first is None:
            raise ProblemError(f"problem {name!r}: the {which} stream yielded no item")
        self.shapes = tuple(tuple(t.shape) for t in first)
        self.dtypes = tuple(t.dtype for t in first)

    def items(self) -> Iterator[tuple[Tensor, ...]]:
        """A fresh pass over the stream, as tuples of batch-dtype tensors."""
        source: Callable[[], Iterable[Any]] | Any = self.stream
        try:
            it = iter(source) if isinstance(source, torch.utils.data.IterableDataset) else iter(source())
        except Exception as exc:
            raise ProblemError(f"problem {self.name!r}: the {self.which} stream could not start: "
                               f"{type(exc).__name__}: {exc}") from exc
        for i, item in enumerate(it):
            where = f"problem {self.name!r}: {self.which} stream item {i}"
            yield tuple(as_batch_tensor(v, f"{where} field {j}") for j, v in enumerate(fields_of(item)))

    def collate(self, items: list[tuple[Tensor, ...]], first: int) -> tuple[Tensor, ...]:
        for i, item in enumerate(items):
            if len(item) != len(self.shapes) or any(tuple(t.shape) != s for t, s in zip(item, self.shapes)):
                raise ProblemError(f"problem {self.name!r}: {self.which} stream item {first + i} has fields "
                                   f"of shapes {[tuple(t.shape) for t in item]}, item 0 {list(self.shapes)}; "
                                   f"items must have one shape")
        return tuple(torch.stack([it[j].to(d) for it in items]) for j, d in enumerate(self.dtypes))

    def head(self, k: int) -> tuple[Tensor, ...]:
        items = list(itertools.islice(self.items(), k))
        return self.collate(items, 0)

    def first(self, batch: int) -> tuple[Tensor, ...]:
        """The first ``batch`` items (ProblemError when the stream ends before them)."""
        items = list(itertools.islice(self.items(), batch))
        if len(items) < batch:
            raise ProblemError(f"problem {self.name!r}: the {self.which} stream ended after {len(items)} "
                               f"items, before the first batch of {batch}")
        return self.collate(items, 0)

    def take(self, idx: Tensor) -> tuple[Tensor, ...]:
        raise TypeError("a stream is read in order, not by row number")

    def fingerprint(self) -> str:
        h = hashlib.sha256(type(self.stream).__qualname__.encode())
        for t in self.head(16):
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        return f"a stream of {type(self.stream).__name__}, read in order"


ACTIVE = 1          # s_len within a pass (0 marks a new pass being begun)


class StreamReader:
    """A worker's batches from its stream; ``state`` (its control slot) holds ``s_epoch`` (passes
    begun), ``s_off`` (items read in this pass) and ``s_len`` (ACTIVE within a pass), written as
    :mod:`shmopt.strategies.position` says so that a live checkpoint reads them whole."""

    def __init__(self, rows: StreamRows, batch: int, state) -> None:
        self.rows, self.batch, self.state = rows, batch, state
        self._it: Iterator[tuple[Tensor, ...]] | None = None

    def _start(self, skip: int) -> None:
        self._it = self.rows.items()
        for _ in itertools.islice(self._it, skip):     # a resumed pass: what was read is read again
            pass

    def next(self) -> tuple[Tensor, ...]:
        st = self.state
        if self._it is None:
            if int(st["s_epoch"]) == 0:
                new_pass(st, ACTIVE)
            st["s_len"] = ACTIVE                      # a resumed pass (its s_off is kept)
            self._start(int(st["s_off"]))
        items: list[tuple[Tensor, ...]] = []
        empty_passes = 0
        while len(items) < self.batch:
            item = next(self._it, None)
            if item is None:                           # the end of this pass: the next one begins
                empty_passes = empty_passes + 1 if not items and int(st["s_off"]) == 0 else 0
                if empty_passes > 1:
                    raise ProblemError(f"problem {self.rows.name!r}: this worker's share of the stream "
                                       f"is empty (shard_stream with more learners than items?)")
                new_pass(st, ACTIVE)
                self._start(0)
                continue
            items.append(item)
            st["s_off"] = int(st["s_off"]) + 1
        return self.rows.collate(items, int(st["s_off"]) - len(items))
