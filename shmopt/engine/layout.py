"""What goes into the arena for a plan (the engine's buffer list, in one place), and the typed
views every engine process takes of it once (:class:`Buffers`), so no loop looks a buffer up by
name. A model's tables (parameters with sparse gradients) are blocks of ``x`` after its dense
parameters: the rules update the dense part, the row rules the tables' touched rows."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..memory import Arena, Layout
from ..memory.layout import HOST
from ..plan import Plan
from ..strategies.sampling import order_capacity
from ..table_plan import table_numel, table_views
from . import control, mailbox, roles, row_slots

DATA_PREFIX = "data"
SNAPSHOTS = "snap"
ORDER = "order"             # --sampling shuffle/shard: each learner's current permutation of rows
#: buffers that are per-gradient scratch: never part of a checkpoint (nor is the problem's data,
#: nor what a replica method calls scratch)
SCRATCH = (SNAPSHOTS, *mailbox.SCRATCH)


def data_names(n_tensors: int) -> tuple[str, ...]:
    return tuple(f"{DATA_PREFIX}{i}" for i in range(n_tensors))


MODULE_BUFFERS = "mbuf"


def checkpoint_skip(plan: Plan, n_data: int) -> tuple[str, ...]:
    """The buffers a checkpoint leaves out: the data, per-gradient scratch, the method's scratch."""
    return (data_names(n_data) + SCRATCH + (plan.replicas.scratch if plan.replicas else ())
            + row_slots.scratch(plan.tables if plan.server is not None else ())
            + tuple(table_name(i, MARK) for i in range(len(plan.tables)) if marks_rows(plan)))


def order_spec(plan: Plan, carried: int = 0) -> list[tuple]:
    """The learners' orders (strategies.sampling): a permutation each, or the rows a resume at another
    worker count carried over when they are more (``carried``); int32 while row numbers fit."""
    wp = plan.worker
    cap = max(order_capacity(wp.sampling, wp.rows, wp.learners), carried)
    return [(ORDER, (plan.workers, cap), "int32" if wp.rows < 2 ** 31 else "int64")] if cap else []


def build_layout(plan: Plan, n: int, train: tuple[torch.Tensor, ...], n_buffers: int = 0,
                 carried: int = 0) -> Layout:
    """The arena of a plan with ``n`` dense parameters; ``x`` holds them followed by the tables
    (each a contiguous ``rows x dim`` block), so a replica, a centre and a checkpoint hold the whole
    model. ``n_buffers`` floating-point module buffers (BatchNorm statistics) are shared like the
    parameters: one row, or one per replica."""
    P, method = plan.workers, plan.replicas
    rows = (P,) if method is not None else ()     # replicas: one x and rule state per worker
    n_total = n + table_numel(plan.tables)
    specs: list[tuple] = control.specs(roles.processes(plan))
    specs.append(("x", (*rows, n_total), "float32"))
    if n_buffers:
        specs.append((MODULE_BUFFERS, (*rows, n_buffers), "float32"))
    specs += [(f"state_{s}", (*rows, n), "float32") for s in plan.rule.state_names]
    if method is not None:                        # the method's own (a centre, a global leader)
        specs += [(name, shape, "float32") for name, shape in method.buffers(n_total, plan.nodes.nnodes
                                                                            if plan.nodes else 1)]
    if plan.server is not None or (plan.direct is not None and plan.direct.snapshot):
        specs.append((SNAPSHOTS, (P, n), "float32"))
    if plan.server is not None:
        specs += mailbox.specs(P, n, plan.server.keep_params_read)
        specs += row_slots.specs(P, mailbox.RING, plan.tables)
        if plan.server.global_applier:              # per node: applied, stale sum/max, dropped
            specs.append(("node_book", (plan.nodes.nnodes, 4), "int64", HOST))
    for i, table in enumerate(plan.tables):       # the tables' row-rule state (per replica)
        specs += [(table_name(i, key), (*rows, *shape), "float32")
                  for key, shape in plan.table_rule.state_specs(table.rows, table.dim).items()]
        if marks_rows(plan):                      # across nodes: the exchange each row was updated at
            specs.append((table_name(i, MARK), (table.rows,), "int32", HOST))
    specs += order_spec(plan, carried)
    for name, t in zip(data_names(len(train)), train):
        specs.append((name, tuple(t.shape), t.numpy().dtype))
    return Layout.build(specs, plan.worker.device)


MARK = "mark"


def marks_rows(plan: Plan) -> bool:
    """Across nodes the direct protocol's learners mark the rows they update (engine.nodes.row_delta)."""
    return bool(plan.tables) and plan.nodes is not None and plan.direct is not None


def table_name(i: int, state: str) -> str:
    """The arena name of table ``i``'s row-rule state buffer ``state``."""
    return f"table{i}_{state}"


@dataclass
class Buffers:
    """The engine's views of its arena."""

    glob: np.void                       # the global record (stop, pause, version, seq, t_go)
    ctrl: np.ndarray                    # every process's control slot
    x: torch.Tensor                     # the model: dense parameters, then tables (P rows for replicas)
    dense: torch.Tensor                 # x's dense parameters (views)
    mbuf: torch.Tensor | None           # the model's floating-point buffers, laid out like x
    state: dict[str, torch.Tensor]      # rule state, by the rule's names
    extra: dict[str, torch.Tensor]      # the replica method's own buffers, by name
    snapshots: torch.Tensor | None      # one private read copy per learner
    data: tuple[torch.Tensor, ...]
    order: torch.Tensor | None          # the learners' current permutations (layout.ORDER)
    tables: tuple[torch.Tensor, ...] = ()              # plan.tables, views of x: (P x) rows x dim
    table_state: tuple[dict[str, torch.Tensor], ...] = ()  # their row rule's state, by its names
    marks: tuple[torch.Tensor, ...] = ()                # across nodes: each row's last exchange count

    @classmethod
    def of(cls, arena: Arena, plan: Plan) -> "Buffers":
        names = [e.name for e in arena.layout.entries if e.name.startswith(DATA_PREFIX)]
        extra = plan.replicas.buffers(0, plan.nnodes) if plan.replicas else []     # (their names)
        x = arena.tensor("x")
        dense = x[..., :x.shape[-1] - table_numel(plan.tables)]
        return cls(arena.array("glob")[0], arena.array("ctrl"), x, dense,
                   arena.tensor(MODULE_BUFFERS) if MODULE_BUFFERS in arena else None,
                   {s: arena.tensor(f"state_{s}") for s in plan.rule.state_names},
                   {name: arena.tensor(name) for name, _ in extra},
                   arena.tensor(SNAPSHOTS) if SNAPSHOTS in arena else None,
                   tuple(arena.tensor(n) for n in names),
                   arena.tensor(ORDER) if ORDER in arena else None,
                   table_views(plan.tables, x),
                   tuple({key: arena.tensor(table_name(i, key)) for key in plan.table_rule.state_names}
                         for i in range(len(plan.tables))),
                   tuple(arena.tensor(table_name(i, MARK)) for i in range(len(plan.tables)))
                   if marks_rows(plan) else ())
