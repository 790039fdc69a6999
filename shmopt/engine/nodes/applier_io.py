"""Which :class:`~shmopt.engine.loops.applier_io.ApplierIO` the applier of a plan runs (the
entry point hands it to the applier loop, so the loops never import the node code)."""
from __future__ import annotations

from ...strategies.server import KAggregator
from ..context import Context
from ..loops.applier_io import ApplierIO, LocalIO
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..wakeups import WakeUps
from .global_io import GlobalIO
from .reducing_io import ReducingIO


def open_io(ctx: Context, wakeups: WakeUps, store: SeqlockStore, mailbox: GradientMailbox,
            agg: KAggregator) -> ApplierIO:
    """The plan's applier IO (not yet entered): one node, ``sync`` across nodes (an all-reduce per
    update), or the global applier on node 0."""
    if ctx.plan.nodes is None:
        return LocalIO(ctx, mailbox, wakeups)
    if ctx.plan.server.global_applier:
        return GlobalIO(ctx, store, mailbox, wakeups, agg)
    return ReducingIO(ctx, store, mailbox, wakeups)
