"""``sync`` across nodes: every node's applier all-reduces the node's summed gradient and count
before each update, so N nodes of P workers apply exactly the mean over N·P gradients with no
central rank; the vote in that collective stops every node after the same update. A model's
tables go as rows: every node's summed rows are all-gathered and their union is divided by the
same count."""
from __future__ import annotations

import sys

import torch

from ...rules import union
from ...rules.consensus import mean_of_sum_, sum_into
from ..context import Context
from ..loops.applier_io import LocalIO
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..tables import Rows
from ..wakeups import WakeUps
from .exchange import FLAGS, book, initial_broadcast
from .link import connect
from .row_delta import gather_rows


class GradientReducer:
    """The mean of every node's gradients, one all_reduce per update."""

    what = "the gradient all-reduce"

    def __init__(self, link, n: int) -> None:
        self.link, self.n = link, n
        self.wire = torch.zeros(n + FLAGS)
        self.stop, self.count = False, 0.0

    def mean(self, grads: list[torch.Tensor], halt: bool, updates: int) -> torch.Tensor:
        """Sum of this node's ``grads`` -> the mean over all nodes' gradients; sets ``stop``
        when any node voted to halt (every node then stops after this same update)."""
        g = sum_into(self.wire[:self.n], grads)
        self.wire[-FLAGS:] = torch.tensor([float(len(grads)), float(halt), float(updates)])
        self.link.all_reduce_(self.wire, self.what)
        count, n_halt, _ = self.wire[-FLAGS:].tolist()
        self.stop, self.count = n_halt > 0, count
        return mean_of_sum_(g, count)


class ReducingIO(LocalIO):
    """The node's mailbox and wake-ups, with the gradients all-reduced over the nodes."""

    def __init__(self, ctx: Context, store: SeqlockStore, mailbox: GradientMailbox, wakeups: WakeUps) -> None:
        super().__init__(ctx, mailbox, wakeups)
        self.store = store
        self.link = self.reducer = None

    def __enter__(self) -> "ReducingIO":
        try:
            self.link = connect(self.ctx)
            ctx = self.ctx
            initial_broadcast(self.link, [self.store.x, *self.store.state.values(), *ctx.tables,
                                          *(t for st in ctx.table_state for t in st.values())])
            self.reducer = GradientReducer(self.link, self.store.x.numel())
        except BaseException:
            self.__exit__(*sys.exc_info())         # leave the group, say the link is not done
            raise
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        clean = exc_type is None
        if self.link is not None:
            self.link.close(clean)
        self.ctx.glob["link_done"] = int(clean)

    def combine(self, grads: list[torch.Tensor], version: int) -> torch.Tensor:
        glob = self.ctx.glob
        g = self.reducer.mean(grads, bool(glob["finish"]), version)
        book(glob, self.link)
        glob["all_updates"] = version + 1          # every update is global
        return g

    def combine_rows(self, rows: list[Rows]) -> Rows:
        """Per table, the rows of every node's gradients, summed where they meet and divided by
        the gradients of all nodes (the count of :meth:`combine`'s collective)."""
        out = []
        for parts in zip(*rows):
            idx, values = union(list(parts))                  # this node's sum
            everyone = gather_rows(self.link, idx, values, GradientReducer.what)
            out.append(union(everyone, 1.0 / self.reducer.count) if everyone
                       else (idx, values))
        return out

    def finished(self) -> bool:
        """Some node voted to halt: every node stops after this same update."""
        if self.reducer.stop and not self.ctx.glob["finish"]:
            self.ctx.glob["peer_finish"] = 1
        return self.reducer.stop
