"""A running engine as readers by name see it (``shmopt top``): the description the supervisor
writes into its arena at creation (:func:`describe`), and one read of its control block
(:func:`read_run`). Unrelated to the learners' snapshot buffers (``--read snapshot``): nothing
here reads the parameters.

A read copies ``glob`` and ``ctrl`` once (lock-free reads of single-writer slots, like the
supervisor's) and derives per process: staleness mean = stale_sum / applied, the histogram's
non-empty bins, heartbeat age, the mean of the losses in its ring and rates since training
started; over the run: the update count (the server's version, or the learners' sum), the lsgd
leader (:func:`~shmopt.strategies.leader.select_leader` over the plan's window) and, across
nodes, the node link's exchanges and time in collectives. Nothing is ever written.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np

from ..memory import ArenaView
from ..memory.shm import run_id
from ..plan import Plan
from ..strategies.leader import LOSS_WINDOW, select_leader, windowed_means
from . import control, roles
from .control import DONE, FAILED, PAUSED, READY, RUNNING, STARTING

KIND = "shmopt-run"
FORMAT = 1
STATUS = {STARTING: "starting", READY: "ready", RUNNING: "running", DONE: "done", FAILED: "failed",
          PAUSED: "paused"}


def describe(plan: Plan, problem: str, source: str | None) -> dict[str, Any]:
    """The run's description, stored in its arena (JSON-able)."""
    rp, nodes = plan.replicas, plan.nodes
    return {"kind": KIND, "format": FORMAT, "pid": os.getpid(), "created": time.time(),
            "problem": problem, "source": source, "algo": plan.algo, "rule": plan.rule.name,
            "protocol": plan.protocol, "variant": plan.variant, "k": plan.k, "workers": plan.workers,
            "processes": roles.processes(plan), "last_role": roles.role_name(plan),
            "device": plan.worker.device, "steps": plan.steps,
            "time_limit": plan.supervisor.time_limit,
            "window": rp.window if rp is not None and rp.has_leader else None,
            "node_rank": nodes.rank if nodes else None, "nodes": nodes.nnodes if nodes else None,
            "tables": [{"name": t.name, "rows": t.rows, "dim": t.dim} for t in plan.tables],
            "checkpoint": os.path.abspath(plan.supervisor.checkpoint) if plan.supervisor.checkpoint else None}


def is_run(meta: Any) -> bool:
    return isinstance(meta, dict) and meta.get("kind") == KIND and meta.get("format") == FORMAT


def _f(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _hist(h: np.ndarray) -> dict[str, int]:
    return {control.bin_label(b): int(c) for b, c in enumerate(h) if c}


def _process(rank: int, s: np.void, meta: dict, now: float, elapsed: float | None) -> dict[str, Any]:
    applied, hb = int(s["applied"]), float(s["heartbeat"])
    loss = windowed_means(s["losses"][None, :], [s["loss_count"]], LOSS_WINDOW)[0]
    return {
        "rank": rank, "role": "worker" if rank < meta["workers"] else meta["last_role"],
        "pid": int(s["pid"]), "status": STATUS.get(int(s["status"]), str(int(s["status"]))),
        "updates": int(s["updates"]), "gradients": int(s["grads"]), "applied": applied,
        "pushed": int(s["pushed"]), "dropped": int(s["dropped"]), "cancelled": int(s["cancelled"]),
        "nonfinite": int(s["nonfinite"]), "samples": int(s["samples"]), "pulls": int(s["pulls"]),
        "rows": int(s["rows"]),
        "updates_per_s": int(s["updates"]) / elapsed if elapsed else None,
        "gradients_per_s": int(s["grads"]) / elapsed if elapsed else None,
        "staleness_mean": int(s["stale_sum"]) / applied if applied else 0.0,
        "staleness_max": int(s["stale_max"]), "staleness_hist": _hist(s["stale_hist"]),
        "heartbeat_age_s": max(now - hb, 0.0) if hb > 0 else None,
        "loss": _f(loss), "idle": bool(s["idle"]),
    }


def _nodes(glob: np.void, meta: dict, elapsed: float | None) -> dict[str, Any]:
    ex = int(glob["exchanges"])
    out = {"node_rank": meta["node_rank"], "nodes": meta["nodes"], "exchanges": ex,
           "comm_s": float(glob["comm_s"]),
           "comm_share": float(glob["comm_s"]) / elapsed if elapsed else None,
           "bytes_sent": int(glob["wire_bytes"]), "all_nodes_updates": int(glob["all_updates"]),
           "node_staleness_mean": int(glob["node_stale_sum"]) / ex if ex else 0.0,
           "node_staleness_max": int(glob["node_stale_max"])}
    if glob["gl_version"] > 0:
        out["global_leader"] = {"node": int(glob["gl_node"]), "worker": int(glob["gl_worker"]),
                                "score": _f(float(glob["gl_score"]))}
    return out


def _last_checkpoint(path: str) -> dict[str, Any] | None:
    """The sidecar of the run's newest checkpoint (updates, time, bytes), or None: none yet."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return {"path": path, "updates": doc.get("updates"), "time": doc.get("time"), "bytes": doc.get("bytes")}


def read_run(view: ArenaView, now: float | None = None) -> dict[str, Any]:
    """One read of a described engine arena: the run, its totals and one row per process."""
    meta = view.meta
    if not is_run(meta):
        raise LookupError(f"segment {view.name} is not an engine run's arena")
    glob = view.array("glob")[0].copy()        # one copy each: the rows come from one read
    ctrl = view.array("ctrl").copy()
    now = time.time() if now is None else now
    P, t_go = meta["workers"], float(glob["t_go"])
    elapsed = max(now - t_go, 1e-9) if t_go > 0 else None
    updates = int(glob["version"]) if meta["protocol"] == "server" else int(ctrl["updates"][:P].sum())
    applied = int(ctrl["applied"].sum())
    state = ("stopping" if glob["stop"] else "paused" if glob["pause"] else
             "running" if t_go > 0 else "starting")
    leader = None
    if meta.get("window") and int(ctrl["loss_count"][:P].max()) > 0:
        leader = select_leader(windowed_means(ctrl["losses"][:P], ctrl["loss_count"][:P], meta["window"]))
    run = {
        "segment": view.name, "run": run_id(view.name), "pid": meta["pid"],
        "problem": meta["problem"], "algo": meta["algo"], "rule": meta["rule"],
        "protocol": meta["protocol"], "variant": meta["variant"], "k": meta["k"], "workers": P,
        "device": meta["device"], "steps": meta["steps"], "time_limit": meta["time_limit"],
        "state": state, "time": now, "age_s": now - meta["created"], "elapsed_s": elapsed,
        "updates": updates, "updates_per_s": updates / elapsed if elapsed else None,
        "gradients": int(ctrl["grads"][:P].sum()), "applied": applied,
        "dropped": int(ctrl["dropped"].sum()), "cancelled": int(ctrl["cancelled"].sum()),
        "nonfinite": int(ctrl["nonfinite"].sum()), "samples": int(ctrl["samples"][:P].sum()),
        "staleness_mean": int(ctrl["stale_sum"].sum()) / applied if applied else 0.0,
        "staleness_max": int(ctrl["stale_max"].max()),
        "staleness_hist": _hist(ctrl["stale_hist"].sum(axis=0)),
        "leader": leader,
        "processes": [_process(r, ctrl[r], meta, now, elapsed) for r in range(meta["processes"])],
    }
    if meta.get("nodes"):
        run["node"] = _nodes(glob, meta, elapsed)
    if meta.get("checkpoint"):                  # the newest checkpoint, from its JSON sidecar
        run["checkpoint"] = _last_checkpoint(meta["checkpoint"])
    if meta.get("tables"):                      # table rows updated: total and per second
        rows = int(ctrl["rows"].sum())
        run.update(tables=meta["tables"], rows=rows, rows_per_s=rows / elapsed if elapsed else None)
    return run
