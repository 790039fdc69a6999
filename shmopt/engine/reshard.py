"""Resuming a checkpoint at another worker count.

The parameters and the rule state of the direct and server protocols do not depend on the worker
count; what does is one control slot per process and, under ``--sampling shuffle/shard``, one
order (current permutation) per learner. A resume with P' workers instead of P:

* **counters**: old learner r's counts go to new learner ``r mod P'`` (sums of counts, staleness
  sums and histograms; the largest staleness; the smallest and largest rate); rank P's slot (the
  applier) goes to rank P'. The global version (the sum of the learners' updates, or the
  applier's) is unchanged, so schedules and ``--steps`` go on from where they were; what describes
  a process now gone (its pid, the version it last read, its loss ring) starts afresh;
* **data position**: the rows old learner r had not yet seen in its current epoch go, in order, to
  new learner ``r mod P'``, which hands them out before its own permutations (of its new shard)
  begin: every row of the interrupted epochs is seen exactly once.

Replica methods keep one model per worker and are refused, as is a run across nodes.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..memory import Arena
from ..plan import Plan
from . import roles
from .control import RUN_FIELDS, SLOT
from .layout import ORDER

CTRL = "ctrl"
#: buffers whose shape follows the worker count, rebuilt here rather than copied
PER_WORKER = (CTRL, ORDER)
MAXIMA = ("stale_max", "lr_max")
AFRESH = ("pid", "status", "heartbeat", "t_ready", "version_read", "loss_count", "losses", "idle",
          "own_start", "s_epoch", "s_len", "s_off")


def refusal(plan: Plan, saved_workers: object) -> str | None:
    """Why a checkpoint of ``saved_workers`` workers cannot resume with this plan's, or None."""
    if saved_workers == plan.workers:
        return None
    if plan.replicas is not None:
        return "replica methods keep one model per worker"
    if plan.nodes is not None:
        return "another worker count is resumed on one node only"
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


def carry(doc: dict, workers: int) -> list[np.ndarray]:
    """Per new learner, the rows left of the old learners' current epochs (possibly none)."""
    out = [np.empty(0, dtype=np.int64) for _ in range(workers)]
    if ORDER not in doc["buffers"]:
        return out
    ctrl = _array(doc, CTRL, SLOT)
    old = _old_learners(doc)
    order = _array(doc, ORDER, _order_dtype(doc)).reshape(old, -1)
    for r in range(old):
        rest = order[r, int(ctrl[r]["s_off"]):int(ctrl[r]["s_len"])].astype(np.int64)
        out[r % workers] = np.concatenate([out[r % workers], rest])
    return out


def carried(doc: dict, workers: int) -> int:
    """The longest carry: the order buffer must hold it."""
    return max((len(c) for c in carry(doc, workers)), default=0)


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
    old_p, new_p = _old_learners(doc), plan.workers
    for name, raw in doc["buffers"].items():
        if name not in PER_WORKER:
            arena.raw(name).copy_(raw)
    old_ctrl, ctrl = _array(doc, CTRL, SLOT), arena.array(CTRL)
    ctrl[...] = np.zeros((), dtype=SLOT)
    for j in range(new_p):
        _fold(old_ctrl[[r for r in range(old_p) if r % new_p == j]], ctrl[j])
    if roles.last_role(plan) is not None and len(old_ctrl) > old_p:
        _fold(old_ctrl[old_p:old_p + 1], ctrl[new_p])
    if ORDER in arena:
        order = arena.tensor(ORDER)
        for j, rows in enumerate(carry(doc, new_p)):
            order[j, :len(rows)] = torch.from_numpy(rows).to(order.dtype)
            ctrl[j]["s_len"], ctrl[j]["s_off"] = len(rows), 0
            ctrl[j]["s_epoch"] = max((int(old_ctrl[r]["s_epoch"]) for r in range(j, old_p, new_p)), default=0)
    glob = arena.array("glob")
    for f in RUN_FIELDS:
        glob[f] = 0


def saved_nodes(doc: dict) -> int:
    """The node count of the run that wrote ``doc`` (recorded, else its options; 1 for one node)."""
    return int(doc.get("nodes") or (doc.get("config") or {}).get("nnodes") or 1)


def check(doc: dict, path: str, plan: Plan) -> None:
    """ConfigError when the checkpoint's node count differs, or its worker count differs and cannot
    be resumed here."""
    nodes, saved = plan.nodes.nnodes if plan.nodes else 1, saved_nodes(doc)
    if saved != nodes:
        raise ConfigError(f"checkpoint {path!r} is one node's file of a run across {saved} nodes and this "
                          f"run has {nodes}: a checkpoint across nodes is resumed with the same node count "
                          f"(--nnodes {saved}), each node from its own file")
    why = refusal(plan, doc.get("workers"))
    if why is not None:
        raise ConfigError(f"checkpoint {path!r} was written with {doc.get('workers')} workers and this run "
                          f"has {plan.workers}: {why}; resume with --workers {doc.get('workers')}")
