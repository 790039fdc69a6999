"""The learner side of server protocols.

Compute a gradient on a consistent snapshot (:class:`~shmopt.engine.store.SeqlockStore`), push it
into the learner's ring of the gradient mailbox, then do what the K-of-P variant says
(strategies.server.WorkerMode): wait to be released, go on with the same parameters, or pull the
current ones. A learner of a synchronous variant abandons a gradient whose version has been
overtaken (it is cancelled: counted, never pushed); the release cuts an injected delay short.
A model's tables are read in place (the seqlock covers the dense snapshot; a row the applier is
writing may be read half-updated, as in Hogwild), their rows pushed beside the gradient.
"""
from __future__ import annotations

import time

from ...memory.flat import bind_grads, bind_params
from ...strategies.server import KAggregator, WorkerMode
from ..context import Context
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..tables import LearnerTables
from ..wakeups import WakeUps
from .common import gradient, start, timed


def client_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, counters, rank, sp = ctx.plan, ctx.counters, ctx.rank, ctx.plan.server
    agg = KAggregator(sp.variant, sp.learners, sp.k)
    mode, cancellable = agg.mode, agg.synchronous
    store = SeqlockStore(ctx.x, ctx.state, ctx.glob)
    mailbox = GradientMailbox(ctx.arena, plan.workers, plan.tables)
    model = ctx.model_fn()
    snap = ctx.local_copy(store.x) if ctx.remote else ctx.buffers.snapshots[rank]
    bind_params(model, snap)
    g = ctx.local_copy(store.x)
    bind_grads(model, g)
    tables = LearnerTables(model, ctx) if plan.tables else None
    start(ctx, wakeups)
    wakeups.drain(rank)                               # releases meant for a predecessor
    t_begin = time.perf_counter()
    version = store.read(snap)
    while True:
        ctx.check()
        counters.slot["version_read"] = version
        if gradient(ctx, model, g, tables) is None:
            continue
        d = ctx.delay.next()
        if cancellable:
            # an update overtook this gradient (during compute or the injected delay, which the
            # release cuts short): cancelled, restart on the new parameters
            if (d > 0 and wakeups.wait_release(rank, ctx.check, timeout=d)) or wakeups.drain(rank):
                wakeups.drain(rank)
                counters.count("cancelled")
                t_begin = time.perf_counter()
                version = store.read(snap)
                continue
        elif d > 0:
            ctx.sleep(d)
        timed(ctx, t_begin, d)                        # waiting for a free slot is not compute
        mailbox.push(rank, counters, g, version, snap, wait=ctx.check, fence=ctx.fence,
                     rows=tables.rows if tables is not None else None)
        wakeups.notify_push()
        if mode is WorkerMode.WAIT:
            wakeups.wait_release(rank, ctx.check)
            wakeups.drain(rank)
        t_begin = time.perf_counter()
        if mode is not WorkerMode.SAME or wakeups.drain(rank):
            version = store.read(snap)
