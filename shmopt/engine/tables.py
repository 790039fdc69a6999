"""A learner's tables: the model's table parameters (views of the arena's tables), the sparse
gradients the backward pass leaves in them, and their application by the run's row rule.

After each backward pass :meth:`LearnerTables.take` turns every table's sparse COO gradient into
(unique row indices, summed row values) (:func:`shmopt.rules.from_sparse`) and clears it, so a
gradient is never applied twice nor densified. :func:`apply_rows` hands rows to the row rule with
the update's step and rate (the rule's arithmetic is in :mod:`shmopt.rules`): the learner of the
direct protocol applies its own, the applier of a server protocol the union of K learners'.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ProblemError
from ..plan import Plan
from ..rules import from_sparse
from ..table_plan import index_error
from .context import Context

Rows = list[tuple[Tensor, Tensor]]       # per table: (unique row indices, their values)


def apply_rows(plan: Plan, tables: tuple[Tensor, ...], states: tuple[dict[str, Tensor], ...], rows: Rows,
               step: int, lr: float) -> int:
    """Apply ``rows`` to the arena's ``tables`` at global step ``step`` and rate ``lr``; the number
    of rows updated."""
    touched = 0
    for (idx, values), table, state in zip(rows, tables, states):
        plan.table_rule.update(table, idx, values, state, step=step, lr=lr, unique=True)
        touched += idx.numel()
    return touched


class LearnerTables:
    """The tables of ``model`` (built by ``ctx.model_fn``), in a learner of any protocol."""

    def __init__(self, model: nn.Module, ctx: Context) -> None:
        plan = self._plan = ctx.plan
        self._tables, self._states = ctx.tables, ctx.table_state      # this learner's (own replica's)
        self._marks, self._glob = ctx.buffers.marks, ctx.glob
        self._params = [model.get_parameter(t.name) for t in plan.tables]
        self.rows: Rows = []

    def take(self) -> None:
        """Collect this mini-batch's row gradients (coalesced) into :attr:`rows`; clear the grads."""
        self.rows = []
        for p in self._params:
            g, p.grad = p.grad, None
            if g is None:                          # the batch did not reach this table
                g = torch.sparse_coo_tensor(torch.empty((1, 0), dtype=torch.int64),
                                            torch.empty((0, *p.shape[1:])), p.shape)
            self.rows.append(from_sparse(g))

    def finite(self) -> bool:
        """Every row value taken is finite (one reduction per table)."""
        return all(math.isfinite(float(v.sum())) for _, v in self.rows)

    def apply(self, step: int, lr: float) -> int:
        """Apply the rows taken (the direct protocol); the rows updated."""
        now = int(self._glob["exchanges"]) + 1 if self._marks else 0     # read before the update
        touched = apply_rows(self._plan, self._tables, self._states, self.rows, step, lr)
        for (idx, _), mark in zip(self.rows, self._marks):   # across nodes: what the exchanges send
            mark.index_fill_(0, idx, now)
        self.rows = []
        return touched

    def index_error(self, exc: IndexError) -> ProblemError:
        """An out-of-range lookup, with the tables and their sizes named."""
        return index_error(self._plan.tables, exc)
