"""The direct protocol (Hogwild; APAM's default form): every learner applies its own updates.

Read the shared parameters (a private snapshot by default, or in place), compute a gradient, apply
the rule to the shared parameters and state without any lock. The version is the sum of the
learners' update counters (:class:`~shmopt.engine.store.SummedStore`); the staleness of a gradient
is the version when it is applied minus the version when its parameters were read. Tables
(:mod:`..tables`) are read and written in place, their touched rows updated by the row rule at the
same step and staleness as the dense parameters.
"""
from __future__ import annotations

import time

from ...memory.flat import bind_grads, bind_params
from ...rules.consensus import sq_distance
from ..context import Context, Stopped
from ..store import SummedStore
from ..tables import LearnerTables
from ..wakeups import WakeUps
from .common import gradient, start, timed


def direct_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, counters, P = ctx.plan, ctx.counters, ctx.plan.workers
    steps, bound, policy = plan.steps, plan.direct.max_staleness, plan.lr_policy
    store = SummedStore(ctx.x, ctx.state, ctx.buffers.ctrl["updates"][:P])
    model = ctx.model_fn()
    snap = ctx.buffers.snapshots[ctx.rank] if plan.direct.snapshot else None
    if ctx.remote:                                  # --gpus > 1: a copy on this learner's GPU
        snap = ctx.local_copy(store.x)
    view = snap if snap is not None else store.x
    bind_params(model, view)
    g = ctx.local_copy(store.x)
    bind_grads(model, g)
    tables = LearnerTables(model, ctx) if plan.tables else None
    start(ctx, wakeups)
    while True:
        ctx.check()
        t_begin = time.perf_counter()
        v_read = store.read(snap)
        counters.slot["version_read"] = v_read
        if gradient(ctx, model, g, tables) is None:
            continue
        if (d := ctx.delay.next()) > 0:
            ctx.sleep(d)
        timed(ctx, t_begin, d)
        v_now = store.version()
        if steps is not None and v_now >= steps:
            raise Stopped
        tau = v_now - v_read
        if bound is not None and tau > bound:
            counters.count("dropped")
            continue
        distance = sq_distance(store.x, view) if policy.needs_distance else None
        at = plan.schedule.factor(v_now)        # the schedule, on the global update count
        lr = policy(at * plan.lr, tau, distance)
        plan.rule.update(store.x, ctx.to_arena(g), store.state, step=v_now + 1, lr=lr)
        if tables is not None:             # the rows, at the same step and staleness-scaled rate
            counters.rows(tables.apply(v_now + 1, policy(at * plan.table_rule.lr, tau, distance)))
        ctx.fence()
        counters.applied(tau, lr)
        counters.update()
