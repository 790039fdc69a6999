"""The replica protocols' learner loop: Leader SGD and EASGD.

Every worker trains its own replica ``x[rank]`` of the arena with its own rule state (the only
writer of both), records its mini-batch losses in its control slot, and every τ local steps
couples to the others: ``lsgd`` pulls toward the leader chosen from the shared loss slots
(strategies.leader; the leader's replica is read straight from shared memory, no broadcast),
``easgd`` exchanges with the shared centre variable (rules.consensus). Only parameters are pulled,
never the rule state.

Across nodes the node is the group: the node link publishes the global leader (the best replica
of all nodes) in ``gleader`` after each exchange, and every worker but the global leader itself
pulls toward it once per published leader, with λ_G (``--lam-global``).
"""
from __future__ import annotations

import time

import torch

from ...rules.consensus import elastic_, leader_pull_
from ...strategies.leader import due, select_leader, windowed_means
from ..context import Context, Stopped
from ...memory.flat import bind_grads, bind_params
from ..wakeups import WakeUps
from .common import gradient, start, timed


def replica_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, rp, counters, rank = ctx.plan, ctx.plan.replicas, ctx.counters, ctx.rank
    P, steps, lr = plan.workers, plan.steps, plan.lr
    ctrl = ctx.buffers.ctrl
    X, x = ctx.buffers.x, ctx.x
    model = ctx.model_fn()                       # built under seed + rank (Context)
    bind_params(model, x, copy=rp.independent_init)
    g = torch.zeros_like(x)
    bind_grads(model, g)
    updates, losses, counts = ctrl["updates"][:P], ctrl["losses"][:P], ctrl["loss_count"][:P]
    mine = rp.members[rank] if rp.members else ()
    center, G, glob = ctx.buffers.center, ctx.buffers.gleader, ctx.glob
    me = (plan.nodes.rank if plan.nodes else 0, rank)
    step, last_local, last_global, seen_global = 0, 0, 0, 0
    start(ctx, wakeups)
    while True:
        ctx.check()
        t_begin = time.perf_counter()
        if gradient(ctx, model, g) is None:
            continue
        if (d := ctx.delay.next()) > 0:
            ctx.sleep(d)
        timed(ctx, t_begin, d)
        total = int(updates.sum())
        if steps is not None and total >= steps:
            raise Stopped
        plan.rule.update(x, g, ctx.state, step=step + 1, lr=lr)
        ctx.fence()
        step += 1
        total += 1
        counters.applied(0, lr)
        counters.update()
        if center is not None:
            if due(step, rp.tau, rp.trigger, total, last_local, P):
                elastic_(x, center, rp.alpha)
                counters.count("pulls")
            last_local = total
            continue
        means = None
        if due(step, rp.tau, rp.trigger, total, last_local, P):
            means = windowed_means(losses, counts, rp.window)
            leader = select_leader(means, mine)
            if leader != rank:
                leader_pull_(x, X[leader], rp.lam)
                counters.count("pulls")
        if G is not None and (v := int(glob["gl_version"])) > seen_global:
            seen_global = v
            if (int(glob["gl_node"]), int(glob["gl_worker"])) != me:
                leader_pull_(x, G[int(glob["gl_index"])], rp.lam_global)
                counters.count("pulls")
        if rp.n_groups > 1 and due(step, rp.tau_global, rp.trigger, total, last_global, P):
            means = means or windowed_means(losses, counts, rp.window)
            leader = select_leader(means)
            if leader != rank:
                leader_pull_(x, X[leader], rp.lam_global)
                counters.count("pulls")
        last_local = last_global = total
