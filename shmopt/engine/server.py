"""The server (applier) of server protocols: the single writer of the shared parameters.

It takes the gradients learners pushed into their slots (in arrival order, woken by a semaphore),
lets the K-of-P strategy decide (strategies.server.KAggregator), averages the chosen gradients,
applies the rule once, bumps the version under a seqlock (odd while writing, so learners read
consistent snapshots), frees the slots and wakes the learners the strategy names. It runs as its
own process (rank P) so the supervisor's evaluations never delay an update.
"""
from __future__ import annotations

import torch

from ..rules.consensus import average_into, sq_distance
from ..strategies.server import Arrival, KAggregator
from .context import Context
from .control import record_applied
from .worker import _start


def serve(ctx: Context, go, push_sem, release_sems) -> None:
    plan, slot, glob, ctrl = ctx.plan, ctx.slot, ctx.glob, ctx.ctrl
    P, steps = plan.workers, plan.steps
    agg = KAggregator(plan.variant, P, plan.k, plan.config.max_staleness)
    policy = plan.lr_policy
    grad_slots = ctx.arena.tensor("grad_slots")
    slot_version = ctx.arena.array("slot_version")
    consumed = ctx.arena.array("consumed")[:, 0]
    wread = ctx.arena.tensor("wread") if policy.needs_distance else None
    pushed = ctrl["pushed"][:P]
    seen = [int(c) for c in consumed]   # gradients taken from each learner's slots so far
    acc = torch.zeros_like(ctx.x) if plan.k > 1 else None
    x, state = ctx.x, ctx.state
    _start(ctx, go)
    while True:
        ctx.wait(push_sem)
        version = int(glob["version"])
        for r in range(P):
            while seen[r] < pushed[r]:
                s = seen[r] % grad_slots.shape[1]
                seen[r] += 1
                verdict = agg.offer(Arrival(r, int(slot_version[r, s]), s), version)
                if verdict != "accepted":
                    slot["dropped"] += 1
                    consumed[r] += 1
        while agg.ready():
            if steps is not None and version >= steps:
                return
            d = agg.take(version)
            grads = [grad_slots[a.rank, a.slot] for a in d.batch]
            g = grads[0] if acc is None else average_into(acc, grads)
            tau = max(d.staleness)
            sq = None
            if wread is not None:        # distance to the oldest parameters in the batch
                old = d.batch[d.staleness.index(tau)]
                sq = sq_distance(x, wread[old.rank, old.slot])
            lr = policy(plan.lr, tau, sq)
            glob["seq"] += 1
            plan.rule.update(x, g, state, step=version + 1, lr=lr)
            version += 1
            glob["version"] = version
            glob["seq"] += 1
            for a, t in zip(d.batch, d.staleness):
                record_applied(slot, t, lr)
                consumed[a.rank] += 1
            for a in d.discarded:
                slot["dropped"] += 1
                consumed[a.rank] += 1
            slot["updates"] += 1
            for r in d.release:
                release_sems[r].release()

