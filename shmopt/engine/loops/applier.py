"""The applier of server protocols: the single writer of the shared parameters.

It takes the gradients learners pushed (in arrival order, woken by a push), lets the K-of-P
strategy decide (strategies.server.KAggregator), averages the chosen gradients, applies the rule
once, publishes the update under the store's seqlock, frees the gradients and wakes the learners
the strategy names. It runs as its own process (rank P) so the supervisor's evaluations never
delay an update. Where the gradients come from and where the answers go is the ``io`` object:

* one node: :class:`LocalIO`, the node's mailbox and wake-ups;
* across nodes, on node 0: the **global applier**, engine.global_io.GlobalIO, which adds every
  other node's gradients (sent by their relays, loops/relay.py) and answers them; K counts
  worker gradients over all nodes;
* ``sync`` across nodes: every node's applier all-reduces the node's summed gradient before each
  update (exchanges.GradientReducer), so every node applies the same mean over all nodes'
  gradients with no central rank; the vote in that collective stops every node after the same
  update.
"""
from __future__ import annotations

import torch

from ...strategies.server import Arrival, Decision, KAggregator
from ...rules.consensus import average_into, sq_distance
from ..context import Context
from ..exchanges import GradientReducer, book, initial_broadcast
from ..global_io import GlobalIO
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..wakeups import WakeUps
from .common import start
from .link import connect


class LocalIO:
    """The applier's gradients and answers inside one node."""

    def __init__(self, mailbox: GradientMailbox, wakeups: WakeUps, check) -> None:
        self.mailbox, self.wakeups, self.check = mailbox, wakeups, check
        self.arrivals, self.grad, self.params_of = mailbox.arrivals, mailbox.grad, mailbox.params_of
        self.consume = mailbox.consume

    def refused(self, a: Arrival, wake: bool) -> None:
        if wake:
            self.wakeups.release(a.rank)

    def published(self, d: Decision, lr: float) -> None:
        for r in d.release:
            self.wakeups.release(r)

    def finished(self) -> bool:
        return False


def applier_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, sp = ctx.plan, ctx.plan.server
    agg = KAggregator(sp.variant, sp.learners, sp.k, sp.max_staleness)
    store = SeqlockStore(ctx.x, ctx.state, ctx.glob)
    mailbox = GradientMailbox(ctx.arena, plan.workers)
    if plan.nodes is None:
        start(ctx, wakeups)
        serve(ctx, wakeups, store, LocalIO(mailbox, wakeups, ctx.check), agg)
        return
    link = connect(ctx)
    clean = False
    try:
        if sp.global_applier:
            io = GlobalIO(ctx, link, store, mailbox, wakeups, agg)
            initial_broadcast(link, [store.x, torch.tensor([store.version()])])
            io.start()
            start(ctx, wakeups)
            serve(ctx, wakeups, store, io, agg)
            io.end(io.reason())
            if not ctx.glob["finish"] and (plan.steps is None or store.version() < plan.steps):
                ctx.glob["peer_finish"] = 1          # another node ended the job
            clean = io.clean
        else:
            initial_broadcast(link, [store.x, *store.state.values()])
            reducer = GradientReducer(link, store.x.numel())
            start(ctx, wakeups)
            serve(ctx, wakeups, store, LocalIO(mailbox, wakeups, ctx.check), agg, reducer)
            clean = True
    finally:
        link.close(clean)
        ctx.glob["link_done"] = int(clean)


def serve(ctx: Context, wakeups: WakeUps, store: SeqlockStore, io, agg: KAggregator,
          reducer: GradientReducer | None = None) -> None:
    """Apply updates until the steps are done, the job finished (across nodes) or a stop."""
    plan, counters, glob = ctx.plan, ctx.counters, ctx.glob
    steps, policy = plan.steps, plan.lr_policy
    adaptive = plan.server.adaptive is not None        # K is the supervisor's, read before each decision
    acc = torch.zeros_like(store.x) if agg.k > 1 or adaptive else None
    while True:
        wakeups.wait_push(io.check)
        version = store.version()
        refused = [a for a in io.arrivals() if agg.offer(a, version) != "accepted"]
        while True:
            for a in refused + agg.expire(version):
                counters.count("dropped")
                io.consume(a)
                io.refused(a, agg.wakes_refused)
            refused = []
            if adaptive:
                agg.resize(int(glob["k"]))
            if not agg.ready():
                break
            if steps is not None and version >= steps:
                return
            d = agg.take(version)
            grads = [io.grad(a) for a in d.batch]
            if reducer is not None:           # sync across nodes: the mean over every node's gradients
                g = reducer.mean(grads, bool(glob["finish"]), version)
                book(glob, reducer.link)
                glob["all_updates"] = version + 1     # every update is global
            else:
                g = grads[0] if len(grads) == 1 else average_into(acc, grads)
            tau = max(d.staleness)
            old = io.params_of(d.batch[d.staleness.index(tau)])   # the oldest gradient's read
            sq = None if old is None else sq_distance(store.x, old)
            lr = policy(plan.lr, tau, sq)
            with store.writing() as version:
                plan.rule.update(store.x, g, store.state, step=version, lr=lr)
                ctx.fence()                           # before the version says it is there
            for a, t in zip(d.batch, d.staleness):
                counters.applied(t, lr)
                io.consume(a)
            for a in d.discarded:
                counters.count("dropped")
                io.consume(a)
                io.refused(a, False)
            counters.update()
            io.published(d, lr)
            if reducer is not None and reducer.stop:   # some node voted: all stop after this update
                if not glob["finish"]:
                    glob["peer_finish"] = 1
                return
        if io.finished():
            return
