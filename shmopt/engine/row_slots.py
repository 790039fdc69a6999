"""The table rows of server protocols' gradients, beside the gradient mailbox's dense slots.

For every slot of every learner's ring (:mod:`.mailbox`), and every table, the slot holds the
gradient's distinct row indices and their values, ``(Table.slot_rows,)`` and ``(slot_rows, dim)``,
and their count. ``slot_rows`` is the rows the first mini-batch looked up (duplicates included),
so a batch of the same shape always fits: the rows are never truncated, and a batch that touches
more (a model whose lookups vary with the data) stops the run with a line that says so.
"""
from __future__ import annotations

from torch import Tensor

from ..errors import ProblemError
from ..memory.layout import HOST

COUNTS = "row_count"


def _idx(i: int) -> str:
    return f"row_idx{i}"


def _val(i: int) -> str:
    return f"row_val{i}"


def specs(workers: int, ring: int, tables: tuple) -> list[tuple]:
    """The arena entries of the rows of ``tables`` (table_plan.Table) in ``workers`` rings."""
    if not tables:
        return []
    out: list[tuple] = [(COUNTS, (workers, ring, len(tables)), "int64", HOST)]
    for i, t in enumerate(tables):
        out += [(_idx(i), (workers, ring, t.slot_rows), "int64"),
                (_val(i), (workers, ring, t.slot_rows, t.dim), "float32")]
    return out


def scratch(tables: tuple) -> tuple[str, ...]:
    """Names of these entries: per-gradient scratch, never part of a checkpoint."""
    return (COUNTS, *(_idx(i) for i in range(len(tables))), *(_val(i) for i in range(len(tables))))


class RowSlots:
    """The rows part of the mailbox: the learner :meth:`put` s, the applier :meth:`get` s."""

    def __init__(self, arena, tables: tuple) -> None:
        self.tables = tables
        self.counts = arena.array(COUNTS)
        self.idx = [arena.tensor(_idx(i)) for i in range(len(tables))]
        self.val = [arena.tensor(_val(i)) for i in range(len(tables))]

    def put(self, rank: int, slot: int, rows: list[tuple[Tensor, Tensor]]) -> None:
        """Write one gradient's rows (per table: unique indices, values) into the slot."""
        for i, (idx, values) in enumerate(rows):
            k, table = idx.numel(), self.tables[i]
            if k > table.slot_rows:
                raise ProblemError(f"a mini-batch touched {k:,} rows of table {table.name!r}, more than the "
                                   f"{table.slot_rows:,} the first mini-batch looked up, which sized the "
                                   f"server protocol's gradient slots; use the direct protocol (hogwild, "
                                   f"apam) for a model whose lookups vary with the data")
            self.idx[i][rank, slot, :k].copy_(idx)
            self.val[i][rank, slot, :k].copy_(values)
            self.counts[rank, slot, i] = k

    def get(self, rank: int, slot: int) -> list[tuple[Tensor, Tensor]]:
        """The rows of the gradient in the slot (views, valid until it is consumed)."""
        out = []
        for i in range(len(self.tables)):
            k = int(self.counts[rank, slot, i])
            out.append((self.idx[i][rank, slot, :k], self.val[i][rank, slot, :k]))
        return out

