"""The applier of server protocols: the single writer of the shared parameters (rank P).

It takes the gradients learners pushed (in arrival order, woken by a push), lets the K-of-P
strategy decide (strategies.server.KAggregator), combines the chosen gradients, applies the rule
once, publishes the update under the store's seqlock, frees the gradients and wakes the learners
the strategy names. It runs as its own process so the supervisor's evaluations never delay an
update; a model's tables get the coalesced mean of the K gradients' rows, under the same
seqlock, step and staleness. Where the gradients come from and where the answers go is its
:class:`~shmopt.engine.loops.applier_io.ApplierIO` (one node, ``sync`` across nodes, or the
global applier on node 0): the loop is the same for all three. Across nodes the global applier
checks after every update whether the job has ended (every node voted done, or one halted), so
it stops right after the update in which it learnt it.
"""
from __future__ import annotations

from ...rules.consensus import sq_distance
from ...strategies.server import KAggregator
from ..context import Context
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..tables import apply_rows
from ..wakeups import WakeUps
from .applier_io import ApplierIO, OpenIO
from .common import start


def applier_loop(ctx: Context, wakeups: WakeUps, open_io: OpenIO) -> None:
    """``open_io`` gives the plan's IO (engine.nodes.applier_io.open_io: one node or across nodes)."""
    sp = ctx.plan.server
    agg = KAggregator(sp.variant, sp.learners, sp.k, sp.max_staleness)
    store = SeqlockStore(ctx.x, ctx.state, ctx.glob)
    mailbox = GradientMailbox(ctx.arena, ctx.plan.workers, ctx.plan.tables)
    with open_io(ctx, wakeups, store, mailbox, agg) as io:
        start(ctx, wakeups)
        serve(ctx, wakeups, store, io, agg)


def serve(ctx: Context, wakeups: WakeUps, store: SeqlockStore, io: ApplierIO, agg: KAggregator) -> None:
    """Apply updates until the steps are done, the job finished (across nodes) or a stop."""
    plan, counters, glob = ctx.plan, ctx.counters, ctx.glob
    steps, policy = plan.steps, plan.lr_policy
    adaptive = plan.server.adaptive is not None        # K is the supervisor's, read before each decision
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
            g = io.combine([io.grad(a) for a in d.batch], version)
            rows = io.combine_rows([io.table_rows(a) for a in d.batch]) if plan.tables else []
            tau = max(d.staleness)
            old = io.params_of(d.batch[d.staleness.index(tau)])   # the oldest gradient's read
            distance = None if old is None else sq_distance(store.x, old)
            at = plan.schedule.factor(version)    # the schedule, on the global update count
            lr = policy(at * plan.lr, tau, distance)
            with store.writing() as version:
                plan.rule.update(store.x, g, store.state, step=version, lr=lr)
                if rows:                              # the K gradients' rows: their coalesced mean
                    counters.rows(apply_rows(plan, ctx.tables, ctx.table_state, rows, version,
                                             policy(at * plan.table_rule.lr, tau, distance)))
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
            if io.finished():
                return
        if io.finished():
            return
