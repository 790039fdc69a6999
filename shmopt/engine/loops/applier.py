"""The applier of server protocols: the single writer of the shared parameters.

It takes the gradients learners pushed (:class:`~shmopt.engine.mailbox.GradientMailbox`, in
arrival order, woken by a push), lets the K-of-P strategy decide (strategies.server.KAggregator),
averages the chosen gradients, applies the rule once, publishes the update under the store's
seqlock, frees the slots and wakes the learners the strategy names. It runs as its own process
(rank P) so the supervisor's evaluations never delay an update.
"""
from __future__ import annotations

import torch

from ...rules.consensus import average_into, sq_distance
from ...strategies.server import Arrival, KAggregator
from ..context import Context
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..wakeups import WakeUps
from .common import start


def applier_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, counters, sp = ctx.plan, ctx.counters, ctx.plan.server
    steps, policy = plan.steps, plan.lr_policy
    agg = KAggregator(sp.variant, plan.workers, sp.k, sp.max_staleness)
    store = SeqlockStore(ctx.x, ctx.state, ctx.glob)
    mailbox = GradientMailbox(ctx.arena, plan.workers)
    acc = torch.zeros_like(store.x) if sp.k > 1 else None
    start(ctx, wakeups)
    while True:
        wakeups.wait_push(ctx.check)
        version = store.version()
        for rank, v, s in mailbox.arrivals():
            if agg.offer(Arrival(rank, v, s), version) != "accepted":
                counters.count("dropped")
                mailbox.consume(rank)
        while agg.ready():
            if steps is not None and version >= steps:
                return
            d = agg.take(version)
            grads = [mailbox.grads[a.rank, a.slot] for a in d.batch]
            g = grads[0] if acc is None else average_into(acc, grads)
            tau = max(d.staleness)
            sq = None
            if mailbox.params_read is not None:   # distance to the oldest parameters in the batch
                old = d.batch[d.staleness.index(tau)]
                sq = sq_distance(store.x, mailbox.params_read[old.rank, old.slot])
            lr = policy(plan.lr, tau, sq)
            with store.writing() as version:
                plan.rule.update(store.x, g, store.state, step=version, lr=lr)
            for a, t in zip(d.batch, d.staleness):
                counters.applied(t, lr)
                mailbox.consume(a.rank)
            for a in d.discarded:
                counters.count("dropped")
                mailbox.consume(a.rank)
            counters.update()
            for r in d.release:
                wakeups.release(r)
