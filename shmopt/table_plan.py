"""The tables of a run: which parameters of the model have sparse gradients, their row rule, and
whether the planned run can train them.

A *table* is a parameter whose gradient autograd gives as a sparse COO tensor
(``nn.Embedding``/``nn.EmbeddingBag`` with ``sparse=True``, or a user's module that does the
same): it lives in the arena as a ``(rows, dim)`` buffer, its gradient travels as (row indices,
row values), and a row rule (:data:`shmopt.rules.TABLE_RULES`) updates the touched rows only.
They are the parameters with a sparse gradient in the forward and backward pass that
``Problem.validate`` runs on the first mini-batch, so a user's own sparse module is found as surely
as ``nn.Embedding``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from torch import Tensor

from .errors import ConfigError, ProblemError
from .plan import Plan
from .problems import Problem
from .rules import RowRule, make_table_rule

#: the lazy row form of each dense rule (--table-rule auto)
AUTO = {"sgd": "sgd", "adam": "adam", "amsgrad": "amsgrad"}


@dataclass(frozen=True)
class Table:
    """One table: the parameter's qualified name, its shape as rows x dim, and the rows a
    mini-batch looks up (measured on the first one; what a mailbox slot holds, at most ``rows``)."""

    name: str
    rows: int
    dim: int
    lookups: int = 0

    @property
    def slot_rows(self) -> int:
        """Rows one gradient of this table carries at most in a server protocol's mailbox slot."""
        return max(1, min(self.rows, self.lookups))

    @property
    def nbytes(self) -> int:
        return self.rows * self.dim * 4


def table_numel(tables: tuple[Table, ...]) -> int:
    """Floats of the tables: they follow the dense parameters in ``x``."""
    return sum(t.rows * t.dim for t in tables)


def table_views(tables: tuple[Table, ...], x: Tensor) -> tuple[Tensor, ...]:
    """The tables as views of ``x``, where they follow the dense parameters: ``(rows, dim)`` each
    (``(P, rows, dim)`` when ``x`` has one row per replica)."""
    out = []
    offset = x.shape[-1] - table_numel(tables)
    for t in tables:
        out.append(x[..., offset:offset + t.rows * t.dim].view(*x.shape[:-1], t.rows, t.dim))
        offset += t.rows * t.dim
    return tuple(out)


def find_tables(problem: Problem) -> tuple[Table, ...]:
    """The tables of a validated problem (its parameters whose gradient is sparse)."""
    return tuple(Table(name, shape[0], math.prod(shape[1:]), lookups)
                 for name, shape, lookups in problem.sparse_parameters)


def with_tables(plan: Plan, tables: tuple[Table, ...]) -> Plan:
    """``plan`` with its tables and their row rule; ConfigError (one line, naming the parameter and
    what is accepted) for an option the tables cannot honour."""
    if not tables:
        return plan
    first = tables[0]
    what = f"parameter {first.name!r} has sparse gradients (a table of {first.rows:,} x {first.dim})"
    if plan.replicas is not None and plan.replicas.independent_init:
        raise ConfigError(f"{what}: --replica-init independent would build a private table per "
                          f"replica; tables start the same in every replica (--replica-init same)")
    if plan.nodes is not None and (plan.nodes.sync_state or plan.nodes.outer_momentum):
        raise ConfigError(f"{what}: --sync-state and --outer-momentum would exchange whole tables; "
                          f"tables exchange their touched rows, their row state stays per node")
    if str(plan.worker.device) != "cpu":
        raise ConfigError(f"{what}: tables train in a CPU arena for now (--device cpu)")
    options = plan.options
    name = options.get("table_rule") or "auto"
    name = AUTO[plan.rule.name] if name == "auto" else name
    lr = options.get("table_lr") or plan.lr
    try:
        rule: RowRule = make_table_rule(name, {**options, "betas": tuple(options["betas"]), "lr": lr})
    except ConfigError as err:
        raise ConfigError(f"{what}: table rule {name}: {err}") from None
    return replace(plan, tables=tables, table_rule=rule)


def index_error(tables: tuple[Table, ...], exc: IndexError) -> ProblemError:
    """An out-of-range lookup in a model with tables, the tables and their sizes named."""
    named = ", ".join(f"{t.name!r} ({t.rows:,} rows)" for t in tables)
    return ProblemError(f"a row index out of range in a table of the model ({named}): {exc}; "
                        f"indices must lie in [0, rows)")
