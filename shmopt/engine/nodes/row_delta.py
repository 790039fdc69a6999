"""The direct protocol across nodes for a model with tables: the dense parameters averaged by
their delta (:class:`~.delta.DeltaExchange`), each table by the deltas of the rows touched since
the last exchange, never the whole table.

The learners mark every row they update with the exchange count read before the update, plus
one (a ``rows`` int32 mark per table in the arena, written lock-free; 0: never updated). Exchange
``k`` sends the rows marked ``k`` or later (``1`` or later at the first): rows updated since the
previous exchange's selection, those updated while it was in flight included (a row may go
twice; its delta is then zero). A mark written after two selections (its learner preempted
between update and mark) would delay its row; the final exchange therefore sends every row that
differs from the consensus (one pass over the tables), so no update is ever left behind.
Selecting the rows scans one int32 per row. Per
table: the counts are all-gathered, then the padded (rows, deltas); every node adds the same
consensus step to the same rows (rules.averaging: row_delta, row_step, merge_rows_). Only the
final exchange (no update in flight) writes whole tables, so every node ends with the same bytes.
"""
from __future__ import annotations

import numpy as np
import torch

from ...rules.averaging import merge_rows_, row_delta, row_step
from .delta import DeltaExchange
from .exchange import Vote, initial_broadcast
from .link import NodeLink


class TableDeltaExchange:
    what = "the model exchange"

    def __init__(self, link: NodeLink, dense: DeltaExchange, tables: tuple[torch.Tensor, ...],
                 marks: tuple[torch.Tensor, ...], glob: np.void, lr: float = 1.0) -> None:
        self.link, self.dense, self.tables, self.marks, self.glob = link, dense, tables, marks, glob
        self.lr = lr
        self.sync: list[torch.Tensor] = []

    def initial(self) -> None:
        """Node 0's start everywhere; the tables' consensus starts there."""
        self.dense.initial()
        initial_broadcast(self.link, list(self.tables))
        self.sync = [t.clone() for t in self.tables]
        for mark in self.marks:                    # no row updated yet (a resumed run too)
            mark.zero_()

    def exchange(self, done: bool, halt: bool, updates: int, final: bool = False) -> Vote:
        vote = self.dense.exchange(done, halt, updates, final)
        since = max(int(self.glob["exchanges"]), 1)
        for table, sync, mark in zip(self.tables, self.sync, self.marks):
            # the final exchange sends every row that differs from the consensus: a learner
            # preempted between its update and its mark cannot leave an update behind
            rows = ((table != sync).any(1) if final else mark >= since).nonzero().view(-1)
            sent = row_delta(table, sync, rows)
            parts = gather_rows(self.link, rows, sent, self.what)
            if not parts:                          # no node touched this table since
                continue
            union, step = row_step(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                                   self.link.nnodes, self.lr)
            merge_rows_(table, sync, rows, sent, union, step)
        if final:                                  # nothing in flight: every node the same bytes
            for table, sync in zip(self.tables, self.sync):
                table.copy_(sync)
        return vote



def gather_rows(link: NodeLink, rows: torch.Tensor, values: torch.Tensor,
                what: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every node's (rows, values) of one table, in node order, the empty ones left out: the
    counts are all-gathered, then the rows and values padded to the longest."""
    counts = link.all_gather(torch.tensor([rows.numel()]), what).view(-1).tolist()
    width = max(counts)
    if width == 0:
        return []
    pad_rows = torch.zeros(width, dtype=torch.int64)
    pad_rows[:rows.numel()] = rows
    pad_values = torch.zeros((width, values.shape[1]))
    pad_values[:rows.numel()] = values
    got_rows, got_values = link.all_gather(pad_rows, what), link.all_gather(pad_values, what)
    return [(r[:c], v[:c]) for r, v, c in zip(got_rows, got_values, counts) if c]
