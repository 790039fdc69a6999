"""The replica protocol's learner loop (lsgd, easgd, local SGD: strategies.replicas).

Every worker trains its own replica ``x[rank]`` of the arena with its own rule state (the only
writer of both), records its mini-batch losses in its control slot, and after every local step
hands over to its replica method's coupler, which couples it to the others when due (a pull
toward a leader, an elastic exchange with a centre, an averaging). Only parameters are coupled,
never the rule state. A model's tables are part of each replica (``x`` holds them after the dense
parameters): the local step updates their touched rows, and a coupling moves whole tables, as the
method's pull rule says for every parameter.
"""
from __future__ import annotations

import time

import torch

from ...memory.flat import bind_grads, bind_params
from ..context import Context, Stopped
from ..tables import LearnerTables
from ..wakeups import WakeUps
from .common import gradient, start, timed


def replica_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, method, counters, rank = ctx.plan, ctx.plan.replicas, ctx.counters, ctx.rank
    steps, b = plan.steps, ctx.buffers
    x = ctx.x
    model = ctx.model_fn()                       # built under seed + rank (Context)
    own = method.independent_init and not counters["own_start"]   # never over a resumed replica
    bind_params(model, x, copy=own)
    if own:
        counters.slot["own_start"] = 1
    g = torch.zeros_like(x)
    bind_grads(model, g)
    tables = LearnerTables(model, ctx) if plan.tables else None
    updates = b.ctrl["updates"][:plan.workers]
    step = 0
    start(ctx, wakeups)                           # across nodes: after node 0's start arrived
    coupler = method.coupler(rank, b.x, b.extra, b.ctrl, b.glob, plan.nodes.rank if plan.nodes else 0)
    while True:
        ctx.check()
        t_begin = time.perf_counter()
        if gradient(ctx, model, g, tables) is None:
            continue
        if (d := ctx.delay.next()) > 0:
            ctx.sleep(d)
        timed(ctx, t_begin, d)
        total = int(updates.sum())
        if steps is not None and total >= steps:
            raise Stopped
        at = plan.schedule.factor(total)             # the schedule, on the global update count
        lr = at * plan.lr
        plan.rule.update(x, g, ctx.state, step=step + 1, lr=lr)
        if tables is not None:
            counters.rows(tables.apply(step + 1, at * plan.table_rule.lr))
        ctx.fence()
        step += 1
        counters.applied(0, lr)
        counters.update()
        for _ in range(coupler.after_step(step, total + 1)):
            counters.count("pulls")
