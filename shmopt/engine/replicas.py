"""The replica protocols' learner loop: Leader SGD and EASGD.

Every worker trains its own replica ``x[rank]`` of the arena with its own rule state (the only
writer of both), records its mini-batch losses in its control slot, and every τ local steps
couples to the others: ``lsgd`` pulls toward the leader chosen from the shared loss slots
(strategies.leader; the leader's replica is read straight from shared memory, no broadcast),
``easgd`` exchanges with the shared centre variable (rules.consensus). Only parameters are pulled,
never the rule state.
"""
from __future__ import annotations

import time

import torch

from ..rules.consensus import elastic_, leader_pull_
from ..strategies.leader import due, groups, select_leader, windowed_means
from .context import Context, Stopped
from .control import record_applied
from .flat import bind_grads, bind_params
from .worker import _gradient, _start, _timed


def replica_loop(ctx: Context, go, push_sem, release_sems) -> None:
    plan, cfg, slot, ctrl, rank = ctx.plan, ctx.plan.config, ctx.slot, ctx.ctrl, ctx.rank
    P, steps, lr = plan.workers, plan.steps, plan.lr
    X, x = ctx.arena.tensor("x"), ctx.x
    model = ctx.model_fn()                       # built under seed + rank (Context)
    bind_params(model, x, copy=cfg.replica_init == "independent")
    g = torch.zeros_like(x)
    bind_grads(model, g)
    updates, losses, counts = ctrl["updates"][:P], ctrl["losses"][:P], ctrl["loss_count"][:P]
    mine = groups(P, cfg.groups)[rank // (P // cfg.groups)]
    center = ctx.arena.tensor("center") if plan.variant == "easgd" else None
    alpha = cfg.beta / P
    step, last_local, last_global = 0, 0, 0
    _start(ctx, go)
    while True:
        ctx.check()
        t_begin = time.perf_counter()
        if _gradient(ctx, model, g) is None:
            continue
        if (d := ctx.delay.next()) > 0:
            ctx.sleep(d)
        _timed(slot, t_begin, d)
        total = int(updates.sum())
        if steps is not None and total >= steps:
            raise Stopped
        plan.rule.update(x, g, ctx.state, step=step + 1, lr=lr)
        step += 1
        total += 1
        record_applied(slot, 0, lr)
        slot["updates"] += 1
        if center is not None:
            if due(step, cfg.tau, cfg.trigger, total, last_local, P):
                elastic_(x, center, alpha)
                slot["pulls"] += 1
            last_local = total
            continue
        means = None
        if due(step, cfg.tau, cfg.trigger, total, last_local, P):
            means = windowed_means(losses, counts, cfg.window)
            leader = select_leader(means, mine)
            if leader != rank:
                leader_pull_(x, X[leader], cfg.lam)
                slot["pulls"] += 1
        if cfg.groups > 1 and due(step, cfg.tau_global, cfg.trigger, total, last_global, P):
            means = means or windowed_means(losses, counts, cfg.window)
            leader = select_leader(means)
            if leader != rank:
                leader_pull_(x, X[leader], cfg.lam_global)
                slot["pulls"] += 1
        last_local = last_global = total
