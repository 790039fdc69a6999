"""The applier of server protocols: the single writer of the shared parameters.

It takes the gradients learners pushed (:class:`~shmopt.engine.mailbox.GradientMailbox`, in
arrival order, woken by a push), lets the K-of-P strategy decide (strategies.server.KAggregator),
averages the chosen gradients, applies the rule once, publishes the update under the store's
seqlock, frees the slots and wakes the learners the strategy names. It runs as its own process
(rank P) so the supervisor's evaluations never delay an update.

Across nodes (``sync`` only) the applier is also the node's link: before each update it
all-reduces the node's summed gradient (exchanges.GradientReducer), so every node applies the
same mean over all nodes' gradients; the vote in that collective stops every node after the
same update.
"""
from __future__ import annotations

import torch

from ...rules.consensus import average_into, sq_distance
from ...strategies.server import Arrival, KAggregator
from ..context import Context
from ..exchanges import GradientReducer, book, initial_broadcast
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..wakeups import WakeUps
from .common import start
from .link import connect


def applier_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, sp = ctx.plan, ctx.plan.server
    agg = KAggregator(sp.variant, plan.workers, sp.k, sp.max_staleness)
    store = SeqlockStore(ctx.x, ctx.state, ctx.glob)
    mailbox = GradientMailbox(ctx.arena, plan.workers)
    acc = torch.zeros_like(store.x) if sp.k > 1 else None
    link = reducer = None
    if plan.nodes is not None:
        link = connect(ctx)
        initial_broadcast(link, [store.x, *store.state.values()])
        reducer = GradientReducer(link, store.x.numel())
    clean = False
    try:
        start(ctx, wakeups)
        _serve(ctx, wakeups, store, mailbox, agg, acc, reducer)
        clean = True
    finally:
        if link is not None:
            link.close(clean)
            ctx.glob["link_done"] = int(clean)


def _serve(ctx: Context, wakeups: WakeUps, store: SeqlockStore, mailbox: GradientMailbox,
           agg: KAggregator, acc: torch.Tensor | None, reducer: GradientReducer | None) -> None:
    plan, counters, glob = ctx.plan, ctx.counters, ctx.glob
    steps, policy = plan.steps, plan.lr_policy
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
            if reducer is not None:           # across nodes: the mean over every node's gradients
                g = reducer.mean(grads, bool(glob["finish"]), version)
                book(glob, reducer.link)
                glob["all_updates"] = version + 1     # every update is global
            else:
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
            if reducer is not None and reducer.stop:   # some node voted: all stop after this update
                if not glob["finish"]:
                    glob["peer_finish"] = 1
                return
