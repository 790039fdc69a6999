"""The gradient mailbox of server protocols: learners push, the applier takes, in arrival order.

Each learner owns a ring of ``RING`` gradient slots (push one while the applier reads the other)
with the version each gradient was computed on (and, for the dutta policy, the parameters it was
read at). Two monotone counters per learner tell the state of its ring without a lock: ``pushed``
(written by the learner, in its control slot) and ``consumed`` (written by the applier, in a
cache-line-padded row of its own). ``pushed - consumed`` gradients are in flight, never more than
``RING``. :meth:`reset` drops every gradient in flight (``consumed = pushed``): a restarted
applier and a resumed checkpoint start from an empty mailbox. A model's tables travel beside
each gradient as rows (:mod:`.row_slots`), never as dense blocks.
"""
from __future__ import annotations

import time
from typing import Iterator

import torch

from ..memory.layout import HOST
from ..strategies.server import Arrival
from .control import Counters
from .row_slots import RowSlots

RING = 2            # gradient slots per learner
_PAD_I64 = 16       # 128 bytes per learner for its "consumed" counter


def specs(workers: int, n: int, keep_params_read: bool) -> list[tuple]:
    out: list[tuple] = [("grad_slots", (workers, RING, n), "float32"),
                        ("slot_version", (workers, RING), "int64", HOST),
                        ("consumed", (workers, _PAD_I64), "int64", HOST)]
    if keep_params_read:
        out.append(("wread", (workers, RING, n), "float32"))
    return out


#: per-gradient scratch: never part of a checkpoint
SCRATCH = ("grad_slots", "wread")


class GradientMailbox:
    def __init__(self, arena, workers: int, tables: tuple = ()) -> None:
        self.workers = workers
        self.rows = RowSlots(arena, tables) if tables else None
        self.grads = arena.tensor("grad_slots")
        self.versions = arena.array("slot_version")
        self.params_read = arena.tensor("wread") if "wread" in arena else None
        self._consumed = arena.array("consumed")[:, 0]
        self._pushed = arena.array("ctrl")["pushed"][:workers]
        self._seen = [int(c) for c in self._consumed]   # applier side: taken from each ring so far

    # ------------------------------------------------------------ learner side
    def full(self, rank: int) -> bool:
        return int(self._pushed[rank]) - int(self._consumed[rank]) >= RING

    def push(self, rank: int, counters: Counters, g: torch.Tensor, version: int,
             params: torch.Tensor | None = None, wait=None, fence=None,
             rows: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Put one gradient (and its tables' ``rows``) into ``rank``'s ring; while it is full call
        ``wait()`` (a stop check); ``fence()`` (a device sync) runs after the copies, before the
        count says they are there."""
        while self.full(rank):
            if wait is not None:
                wait()
            time.sleep(0.0002)
        pushed = int(counters["pushed"])
        s = pushed % RING
        self.grads[rank, s].copy_(g)
        if self.params_read is not None and params is not None:
            self.params_read[rank, s].copy_(params)
        if self.rows is not None:
            self.rows.put(rank, s, rows)
        self.versions[rank, s] = version
        if fence is not None:
            fence()
        counters.slot["pushed"] = pushed + 1

    # ------------------------------------------------------------ applier side
    def arrivals(self) -> Iterator[Arrival]:
        """New gradients since the last call (rank, version computed on, slot), rank by rank."""
        for r in range(self.workers):
            while self._seen[r] < int(self._pushed[r]):
                s = self._seen[r] % RING
                self._seen[r] += 1
                yield Arrival(r, int(self.versions[r, s]), s)

    def grad(self, a: Arrival) -> torch.Tensor:
        return self.grads[a.rank, a.slot]

    def rows_of(self, a: Arrival) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The table rows of ``a`` (per table: unique indices, values), views of its slot."""
        return self.rows.get(a.rank, a.slot)

    def params_of(self, a: Arrival) -> torch.Tensor | None:
        """The parameters ``a`` was computed on (dutta policy), else None."""
        return None if self.params_read is None else self.params_read[a.rank, a.slot]

    def consume(self, a: Arrival) -> None:
        """Free the oldest slot of the learner's ring (its gradient was applied or dropped); a
        ring is consumed in arrival order."""
        self._consumed[a.rank] += 1

    # ------------------------------------------------------------ supervisor side
    def in_flight(self) -> int:
        return int(self._pushed.sum()) - int(self._consumed.sum())

    def reset(self) -> None:
        """Drop every gradient in flight."""
        self._consumed[:] = self._pushed
