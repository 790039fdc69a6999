"""The run record: what a run returns (:class:`Result`), its evaluation samples, and the summary
statistics read from the control block.

Every counter is a lock-free read of single-writer slots (engine.control), summed over the
processes; the supervisor reads them while workers run (``partial``) and once after they stopped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..plan import Plan
from ..strategies.adaptive_k import ADAPTIVE, KTracker
from .control import bin_label


@dataclass
class Sample:
    t: float                # seconds since training started
    updates: int
    loss: float | None
    samples_per_s: float
    staleness_mean: float
    gradients: int
    dropped: int
    leader: int | None = None                 # replica protocols: the current leader
    loss_average: float | None = None         # replica protocols: eval loss of the replicas' mean
    loss_replicas: list[float] | None = None  # replica protocols: eval loss of each replica
    exchanges: int | None = None              # across nodes: exchanges so far
    comm_share: float | None = None           # across nodes: share of the time collectives ran
    bytes_per_update: float | None = None
    node_staleness_mean: float | None = None
    metrics: dict[str, float] | None = None   # the problem's metrics (accuracy, ...)
    k: int | None = None                      # server protocols: the K in force from this sample on

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None and k != "metrics"}
        return {**d, **(self.metrics or {})}


@dataclass
class Result:
    """What a run returns: the trained model (a normal, private nn.Module), the error-runtime
    history (one dict per evaluation: t, updates, loss, ...) and the summary statistics."""

    model: torch.nn.Module
    history: list[dict[str, Any]]
    stats: dict[str, Any]

    @property
    def final_loss(self) -> float | None:
        return self.stats.get("final_loss")


@dataclass
class RunRecord:
    """What the supervisor observed, apart from the counters: times, samples, events."""

    t_spawn: float = 0.0
    t_go: float = 0.0
    t_stop: float = 0.0
    stop_reason: str | None = None
    final_loss: float | None = None
    history: list[Sample] = field(default_factory=list)
    checkpoints: int = 0
    checkpoint_failures: int = 0              # checkpoints that could not be written (a full disk)
    checkpoint_log: list[dict] = field(default_factory=list)   # per checkpoint: mode, pause_s, write_s
    leader: int | None = None
    leader_changes: int = 0
    k_tracker: KTracker | None = None         # --k adaptive: the schedule's state
    k_schedule: list[list] = field(default_factory=list)   # server protocols: [t, updates, K] per change

    def next_k(self, s: Sample, fixed: int, decide: bool) -> int:
        """Server protocols: the K in force after sample ``s``: ``fixed``, or under --k adaptive
        the schedule's decision on ``s.loss`` (when ``decide``); every change goes into
        ``k_schedule``."""
        k = fixed if self.k_tracker is None else (
            self.k_tracker.observe(s.loss) if decide else self.k_tracker.k)
        if not self.k_schedule or self.k_schedule[-1][2] != k:
            self.k_schedule.append([s.t, s.updates, k])
        return k

    def track_leader(self, leader: int | None) -> None:
        if leader is not None and leader != self.leader:
            if self.leader is not None:
                self.leader_changes += 1
            self.leader = leader


def summary(plan: Plan, ctrl: np.ndarray, updates: int, rec: RunRecord, partial: bool = False,
            **extra: Any) -> dict[str, Any]:
    """The JSON summary of a run (``partial``: only what a progress sample needs); ``extra`` is
    added as it is (model size, arena, restarts, ...)."""
    P = plan.workers
    applied = int(ctrl["applied"].sum())
    t_end = rec.t_stop or time.time()
    wall = max(t_end - rec.t_go, 1e-9) if rec.t_go else 0.0
    samples = int(ctrl["samples"][:P].sum())
    st = {
        "algo": plan.algo, "rule": plan.rule.name, "protocol": plan.protocol,
        "variant": plan.variant, "k": plan.k, "workers": P, "device": plan.worker.device, "lr": plan.lr,
        "batch_size": plan.batch_size, **extra,
        "updates": updates, "gradients": int(ctrl["grads"][:P].sum()), "applied": applied,
        "dropped": int(ctrl["dropped"].sum()), "cancelled": int(ctrl["cancelled"].sum()),
        "nonfinite": int(ctrl["nonfinite"].sum()),
        "samples": samples,
        "epochs": samples / plan.train_rows if plan.train_rows else None,   # passes over the data
        "startup_s": rec.t_go - rec.t_spawn if rec.t_go else None,
        "wall_s": wall,
        "samples_per_s": samples / wall if wall else 0.0,
        "iteration_time_mean_s": wall / updates if updates else None,
        "staleness_mean": float(ctrl["stale_sum"].sum()) / applied if applied else 0.0,
        "staleness_max": int(ctrl["stale_max"].max()),
        "compute_mean_s": float(ctrl["compute_s"].sum()) / max(1, int(ctrl["timed"].sum())),
    }
    if plan.tables:                       # rows of the tables updated (distinct per update), per second
        rows = int(ctrl["rows"].sum())
        st.update(rows_touched=rows, rows_per_s=rows / wall if wall else 0.0)
    if partial:
        return st
    hist = ctrl["stale_hist"].sum(axis=0)
    lr_min = [float(ctrl[r]["lr_min"]) for r in range(len(ctrl)) if ctrl[r]["applied"]]
    st.update({
        "staleness_hist": {bin_label(b): int(c) for b, c in enumerate(hist) if c},
        "lr_policy": plan.lr_policy.name,
        "lr_schedule": plan.schedule.label,
        "lr_last": plan.lr * plan.schedule.factor(max(updates - 1, 0)) if updates else None,
        "lr_mean": float(ctrl["lr_sum"].sum()) / applied if applied else None,
        "lr_min": min(lr_min) if lr_min else None,
        "lr_max": float(ctrl["lr_max"].max()) if applied else None,
        "final_loss": rec.final_loss,
        "final_metrics": rec.history[-1].metrics if rec.history else None,
        "final_accuracy": (rec.history[-1].metrics or {}).get("accuracy") if rec.history else None,
        "stop_reason": rec.stop_reason,
        "checkpoints": rec.checkpoints, "checkpoint_failures": rec.checkpoint_failures,
        "checkpoint_log": list(rec.checkpoint_log),
    })
    if plan.tables:
        st.update(table_rule=plan.table_rule.label, table_lr=plan.table_rule.lr,
                  tables=[{"name": t.name, "rows": t.rows, "dim": t.dim, "bytes": t.nbytes,
                           "state_bytes": 4 * sum(math.prod(shape) for shape in
                                                  plan.table_rule.state_specs(t.rows, t.dim).values())}
                          for t in plan.tables])
    if plan.server is not None and rec.k_schedule:
        st.update(k_schedule=rec.k_schedule, k_final=rec.k_schedule[-1][2])
        if plan.server.adaptive is not None:
            st.update(k=ADAPTIVE, k_ladder=list(plan.server.adaptive.ladder))
    if plan.replicas is not None:
        last = rec.history[-1] if rec.history else None
        st.update({"pulls": int(ctrl["pulls"].sum()),
                   "loss_average": last.loss_average if last else None,
                   "loss_replicas": last.loss_replicas if last else None})
        if plan.replicas.has_leader:
            st.update({"leader_rank": rec.leader, "leader_changes": rec.leader_changes})
    return st


def node_summary(plan: Plan, glob: np.void, updates: int, wall: float,
                 node_book: np.ndarray | None = None) -> dict[str, Any]:
    """Across nodes: this node's place and what it exchanged (the node link's figures; for the
    global applier, messages and its per-node tallies)."""
    np_ = plan.nodes
    ex = int(glob["exchanges"])
    st: dict[str, Any] = {
        "node_rank": np_.rank, "nodes": np_.nnodes,
        "exchange_every": np_.every if plan.server is None else 1,
        "exchanges": ex, "all_nodes_updates": int(glob["all_updates"]),
        "comm_s": float(glob["comm_s"]),
        "comm_share": float(glob["comm_s"]) / wall if wall else None,
        "bytes_sent": int(glob["wire_bytes"]),
        "bytes_per_update": int(glob["wire_bytes"]) / updates if updates else None,
        "node_staleness_mean": int(glob["node_stale_sum"]) / ex if ex else 0.0,
        "node_staleness_max": int(glob["node_stale_max"]),
    }
    if plan.direct is not None:
        st.update(outer_lr=np_.outer_lr, outer_momentum=np_.outer_momentum, sync_state=np_.sync_state)
    sp = plan.server
    if sp is not None and sp.global_applier:
        st.update(messages=ex, messages_per_update=ex / updates if updates else None,
                  on_node_failure=np_.on_failure, nodes_lost=int(glob["nodes_lost"]))
        if node_book is not None and np_.rank == 0:
            st["applier_cpu_s_per_update"] = float(glob["serve_cpu_s"]) / updates if updates else None
            st["per_node"] = [{"node": m, "applied": int(a), "dropped": int(d),
                               "staleness_mean": float(s_) / a if a else 0.0, "staleness_max": int(mx)}
                              for m, (a, s_, mx, d) in enumerate(node_book.tolist())]
    if glob["gl_version"] > 0:                       # a leader exchange published a global leader
        st.update(global_leader={"node": int(glob["gl_node"]), "worker": int(glob["gl_worker"]),
                                 "score": float(glob["gl_score"]),
                                 "local_score": float(glob["local_score"])})
    return st
