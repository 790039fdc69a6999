"""What goes into the arena for a plan (the engine's buffer list, in one place), and the typed
views every engine process takes of it once (:class:`Buffers`), so no loop looks a buffer up by
name."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..memory import Arena, Layout
from ..memory.layout import HOST
from ..plan import Plan
from . import control, mailbox, roles

DATA_PREFIX = "data"
SNAPSHOTS = "snap"
#: buffers that are per-gradient scratch: never part of a checkpoint (nor is the problem's data,
#: nor what a replica method calls scratch)
SCRATCH = (SNAPSHOTS, *mailbox.SCRATCH)


def data_names(n_tensors: int) -> tuple[str, ...]:
    return tuple(f"{DATA_PREFIX}{i}" for i in range(n_tensors))


MODULE_BUFFERS = "mbuf"


def checkpoint_skip(plan: Plan, n_data: int) -> tuple[str, ...]:
    """The buffers a checkpoint leaves out: the data, per-gradient scratch, the method's scratch."""
    return data_names(n_data) + SCRATCH + (plan.replicas.scratch if plan.replicas else ())


def build_layout(plan: Plan, n: int, train: tuple[torch.Tensor, ...], n_buffers: int = 0) -> Layout:
    """The arena of a plan; ``n_buffers`` floating-point module buffers (BatchNorm statistics) are
    shared like the parameters: one row, or one per replica."""
    P, method = plan.workers, plan.replicas
    rows = (P,) if method is not None else ()     # replicas: one x and rule state per worker
    specs: list[tuple] = control.specs(roles.processes(plan))
    specs.append(("x", (*rows, n), "float32"))
    if n_buffers:
        specs.append((MODULE_BUFFERS, (*rows, n_buffers), "float32"))
    specs += [(f"state_{s}", (*rows, n), "float32") for s in plan.rule.state_names]
    if method is not None:                        # the method's own (a centre, a global leader)
        specs += [(name, shape, "float32") for name, shape in method.buffers(n, plan.nodes.nnodes
                                                                            if plan.nodes else 1)]
    if plan.server is not None or (plan.direct is not None and plan.direct.snapshot):
        specs.append((SNAPSHOTS, (P, n), "float32"))
    if plan.server is not None:
        specs += mailbox.specs(P, n, plan.server.keep_params_read)
        if plan.server.global_applier:              # per node: applied, stale sum/max, dropped
            specs.append(("node_book", (plan.nodes.nnodes, 4), "int64", HOST))
    for i, table in enumerate(plan.tables):       # tables and their row state, read and written in place
        specs.append((table_name(i), (table.rows, table.dim), "float32"))
        specs += [(table_name(i, key), shape, "float32")
                  for key, shape in plan.table_rule.state_specs(table.rows, table.dim).items()]
    for name, t in zip(data_names(len(train)), train):
        specs.append((name, tuple(t.shape), t.numpy().dtype))
    return Layout.build(specs, plan.worker.device)


def table_name(i: int, state: str | None = None) -> str:
    """The arena name of table ``i`` (or of its row-rule state buffer ``state``)."""
    return f"table{i}" if state is None else f"table{i}_{state}"


@dataclass
class Buffers:
    """The engine's views of its arena."""

    glob: np.void                       # the global record (stop, pause, version, seq, t_go)
    ctrl: np.ndarray                    # every process's control slot
    x: torch.Tensor                     # parameters (P x n for replicas)
    mbuf: torch.Tensor | None           # the model's floating-point buffers, laid out like x
    state: dict[str, torch.Tensor]      # rule state, by the rule's names
    extra: dict[str, torch.Tensor]      # the replica method's own buffers, by name
    snapshots: torch.Tensor | None      # one private read copy per learner
    data: tuple[torch.Tensor, ...]
    tables: tuple[torch.Tensor, ...] = ()              # plan.tables, (rows, dim) each
    table_state: tuple[dict[str, torch.Tensor], ...] = ()  # their row rule's state, by its names

    @classmethod
    def of(cls, arena: Arena, plan: Plan) -> "Buffers":
        names = [e.name for e in arena.layout.entries if e.name.startswith(DATA_PREFIX)]
        nnodes = plan.nodes.nnodes if plan.nodes else 1
        extra = plan.replicas.buffers(0, nnodes) if plan.replicas else []     # (their names)
        return cls(arena.array("glob")[0], arena.array("ctrl"), arena.tensor("x"),
                   arena.tensor(MODULE_BUFFERS) if MODULE_BUFFERS in arena else None,
                   {s: arena.tensor(f"state_{s}") for s in plan.rule.state_names},
                   {name: arena.tensor(name) for name, _ in extra},
                   arena.tensor(SNAPSHOTS) if SNAPSHOTS in arena else None,
                   tuple(arena.tensor(n) for n in names),
                   tuple(arena.tensor(table_name(i)) for i in range(len(plan.tables))),
                   tuple({key: arena.tensor(table_name(i, key)) for key in plan.table_rule.state_names}
                         for i in range(len(plan.tables))))
