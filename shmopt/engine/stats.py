"""Run statistics: one evaluation sample, and the summary read from the control block.

Everything here is a lock-free read of single-writer counters (engine.control), summed over the
processes; the supervisor calls it while workers run (partial) and once after they stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .control import bin_label

if TYPE_CHECKING:
    from .supervisor import Engine


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

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def collect_stats(eng: "Engine", partial: bool = False) -> dict[str, Any]:
    """The JSON summary of a run (``partial``: only what a progress sample needs)."""
    P, plan = eng.plan.workers, eng.plan
    ctrl = eng.arena.array("ctrl")
    applied = int(ctrl["applied"].sum())
    t_end = eng.t_stop or time.time()
    wall = max(t_end - eng.t_go, 1e-9) if eng.t_go else 0.0
    samples = int(ctrl["samples"][:P].sum())
    updates = eng.updates()
    st = {
        "algo": plan.algo, "rule": plan.rule.name, "protocol": plan.protocol,
        "variant": plan.variant, "k": plan.k, "workers": P, "lr": plan.lr,
        "batch_size": plan.batch_size, "parameters": eng.n_params,
        "updates": updates, "gradients": int(ctrl["grads"][:P].sum()), "applied": applied,
        "dropped": int(ctrl["dropped"].sum()), "cancelled": int(ctrl["cancelled"].sum()),
        "nonfinite": int(ctrl["nonfinite"].sum()),
        "samples": samples,
        "startup_s": eng.t_go - eng.t_spawn if eng.t_go else None,
        "wall_s": wall,
        "samples_per_s": samples / wall if wall else 0.0,
        "iteration_time_mean_s": wall / updates if updates else None,
        "staleness_mean": float(ctrl["stale_sum"].sum()) / applied if applied else 0.0,
        "staleness_max": int(ctrl["stale_max"].max()),
        "compute_mean_s": float(ctrl["compute_s"].sum()) / max(1, int(ctrl["timed"].sum())),
    }
    if partial:
        return st
    hist = ctrl["stale_hist"].sum(axis=0)
    lr_min = [float(ctrl[r]["lr_min"]) for r in range(len(ctrl)) if ctrl[r]["applied"]]
    st.update({
        "staleness_hist": {bin_label(b): int(c) for b, c in enumerate(hist) if c},
        "lr_policy": plan.lr_policy.name,
        "lr_mean": float(ctrl["lr_sum"].sum()) / applied if applied else None,
        "lr_min": min(lr_min) if lr_min else None,
        "lr_max": float(ctrl["lr_max"].max()) if applied else None,
        "final_loss": eng.final_loss,
        "optimum": eng.problem.optimum,
        "stop_reason": eng.stop_reason,
        "restarts": len(eng.failures), "checkpoints": eng.checkpoints,
        "arena": eng.arena.name, "arena_bytes": eng.arena.layout.nbytes,
    })
    if plan.protocol == "replicas":
        last = eng.history[-1] if eng.history else None
        st.update({"pulls": int(ctrl["pulls"].sum()),
                   "loss_average": last.loss_average if last else None,
                   "loss_replicas": last.loss_replicas if last else None})
        if plan.variant == "lsgd":
            st.update({"leader_rank": eng.leader(), "leader_changes": eng.leader_changes})
    return st
