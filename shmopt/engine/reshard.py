"""Resuming a checkpoint at another worker count, or another node count.

The parameters and the rule state of the direct and server protocols do not depend on the worker
count; what does is one control slot per process and, under ``--sampling shuffle/shard``, one
order (current permutation) per learner. Learners are counted over all nodes: old learner l (of
L) goes to new learner ``l mod L'`` (:class:`Seats`; on one node L = P, L' = P'). A resume:

* **counters**: old learner l's counts go to new learner ``l mod L'`` (sums of counts, staleness
  sums and histograms; the largest staleness; the smallest and largest rate); rank P's slot (the
  applier, or node 0's link) goes to rank P' of new node 0. The global version (the sum of the
  learners' updates, or the applier's) is unchanged, so schedules and ``--steps`` go on from
  where they were; what describes a process now gone (its pid, the version it last read, its loss
  ring) starts afresh;
* **data position**: the rows old learner l had not yet seen in its current epoch go, in order, to
  new learner ``l mod L'``, which hands them out before its own permutations (of its new shard)
  begin: every row of the interrupted epochs is seen exactly once.

Across nodes, :mod:`.reshard_nodes` first merges every old node's checkpoint into one of L
learners. Replica methods keep one model per worker and are refused, as are streams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..memory import Arena
from ..plan import Plan
from . import roles
from .control import RUN_FIELDS, SLOT
from .layout import ORDER

CTRL = "ctrl"
NODE_BOOK = "node_book"
#: buffers whose shape follows the worker (or node) count, rebuilt here rather than copied (the
#: mailbox's rings start empty: the engine drops the gradients in flight at every resume)
PER_WORKER = (CTRL, ORDER, NODE_BOOK, "slot_version", "consumed")
MAXIMA = ("stale_max", "lr_max")
AFRESH = ("pid", "status", "heartbeat", "t_ready", "version_read", "loss_count", "losses", "idle",
          "own_start", "s_epoch", "s_len", "s_off")


@dataclass(frozen=True)
class Seats:
    """Where old learners go: old learner l to new learner ``l mod total``, of which this node holds
    ``first .. first + local - 1`` (its local learners 0 .. local - 1)."""

    total: int
    first: int
    local: int

    @classmethod
    def of(cls, plan: Plan) -> "Seats":
        return cls(plan.workers * plan.nnodes, plan.workers * plan.node_rank, plan.workers)

    def local_of(self, learner: int) -> int | None:
        j = learner % self.total - self.first
        return j if 0 <= j < self.local else None


def refusal(plan: Plan, saved_workers: object, other_nodes: bool = False) -> str | None:
    """Why a checkpoint of ``saved_workers`` workers (of another node count: ``other_nodes``) cannot
    resume with this plan, or None."""
    if saved_workers == plan.workers and not other_nodes:
        return None
    if plan.replicas is not None:
        return "replica methods keep one model per worker"
    if not plan.worker.rows:
        return "each worker reads its own share of a stream, and the shares change with the count"
    return None


def _array(doc: dict, name: str, dtype: np.dtype) -> np.ndarray:
    return doc["buffers"][name].numpy().view(dtype)


def _order_dtype(doc: dict) -> np.dtype:
    row = next(r for r in doc["layout"] if r[0] == ORDER)
    return np.dtype(row[2])


def _old_learners(doc: dict) -> int:
    return int(doc["workers"])


def carry(doc: dict, seats: Seats) -> list[np.ndarray]:
    """Per local learner, the rows left of the old learners' current epochs (possibly none)."""
    out = [np.empty(0, dtype=np.int64) for _ in range(seats.local)]
    if ORDER not in doc["buffers"]:
        return out
    ctrl = _array(doc, CTRL, SLOT)
    old = _old_learners(doc)
    order = _array(doc, ORDER, _order_dtype(doc)).reshape(old, -1)
    for r in range(old):
        if (j := seats.local_of(r)) is not None:
            rest = order[r, int(ctrl[r]["s_off"]):int(ctrl[r]["s_len"])].astype(np.int64)
            out[j] = np.concatenate([out[j], rest])
    return out


def carried(doc: dict, seats: Seats) -> int:
    """The longest carry: the order buffer must hold it."""
    return max((len(c) for c in carry(doc, seats)), default=0)


def _fold(old: np.ndarray, new: np.ndarray) -> None:
    """Counters of old slot(s) ``old`` into the single new slot ``new`` (a 0-d record view)."""
    if not len(old):
        return
    for name in SLOT.names:
        if name.startswith("_") or name in AFRESH:
            continue
        values = old[name]
        if name in MAXIMA:
            new[name] = values.max(axis=0)
        elif name == "lr_min":
            used = values[old["applied"] > 0]
            new[name] = used.min() if used.size else 0.0
        else:
            new[name] = values.sum(axis=0)


def restore(doc: dict, arena: Arena, plan: Plan) -> None:
    """Copy a checkpoint of another worker count into a fresh arena (see the module's text)."""
    old_p, new_p, seats = _old_learners(doc), plan.workers, Seats.of(plan)
    mine = [[r for r in range(old_p) if seats.local_of(r) == j] for j in range(new_p)]
    for name, raw in doc["buffers"].items():
        if name not in PER_WORKER:
            arena.raw(name).copy_(raw)
    if NODE_BOOK in arena and NODE_BOOK in doc["buffers"]:
        _fold_rows(doc["buffers"][NODE_BOOK], arena)
    old_ctrl, ctrl = _array(doc, CTRL, SLOT), arena.array(CTRL)
    ctrl[...] = np.zeros((), dtype=SLOT)
    for j in range(new_p):
        _fold(old_ctrl[mine[j]], ctrl[j])
    if roles.last_role(plan) is not None and len(old_ctrl) > old_p and seats.first == 0:
        _fold(old_ctrl[old_p:old_p + 1], ctrl[new_p])
    if ORDER in arena:
        order = arena.tensor(ORDER)
        for j, rows in enumerate(carry(doc, seats)):
            order[j, :len(rows)] = torch.from_numpy(rows).to(order.dtype)
            ctrl[j]["s_len"], ctrl[j]["s_off"] = len(rows), 0
            ctrl[j]["s_epoch"] = max((int(old_ctrl[r]["s_epoch"]) for r in mine[j]), default=0)
    glob = arena.array("glob")
    for f in RUN_FIELDS:
        glob[f] = 0


def saved_nodes(doc: dict) -> int:
    """The node count of the run that wrote ``doc`` (recorded, else its options; 1 for one node)."""
    return int(doc.get("nodes") or (doc.get("config") or {}).get("nnodes") or 1)


def _fold_rows(raw: torch.Tensor, arena: Arena) -> None:
    """The global applier's per-node book (counts per node): old node r's row into new node
    ``r mod N'``."""
    book = arena.array(NODE_BOOK)
    old = raw.numpy().view(book.dtype).reshape(-1, book.shape[1])
    book[...] = 0
    for r, row in enumerate(old):
        book[r % len(book)] += row


def check(doc: dict, path: str, plan: Plan) -> None:
    """ConfigError when the checkpoint's worker or node count differs and cannot be resumed here."""
    nodes, saved = plan.nnodes, saved_nodes(doc)
    why = refusal(plan, doc.get("workers"), saved != nodes)
    if why is not None and saved == nodes == 1:
        raise ConfigError(f"checkpoint {path!r} was written with {doc.get('workers')} workers and this run "
                          f"has {plan.workers}: {why}; resume with --workers {doc.get('workers')}")
    if why is not None:
        raise ConfigError(f"checkpoint {path!r} was written with {saved} x {doc.get('workers')} workers "
                          f"(nodes x workers) and this run has {nodes} x {plan.workers}: {why}; resume with "
                          f"the same counts")
