"""``sync`` across nodes: every node's applier all-reduces the node's summed gradient and count
before each update, so N nodes of P workers apply exactly the mean over N·P gradients with no
central rank; the vote in that collective stops every node after the same update."""
from __future__ import annotations

import sys

import torch

from ...rules.consensus import mean_of_sum_, sum_into
from ..context import Context
from ..loops.applier_io import LocalIO
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..wakeups import WakeUps
from .exchange import FLAGS, book, initial_broadcast
from .link import connect


class GradientReducer:
    """The mean of every node's gradients, one all_reduce per update."""

    what = "the gradient all-reduce"

    def __init__(self, link, n: int) -> None:
        self.link, self.n = link, n
        self.wire = torch.zeros(n + FLAGS)
        self.stop = False

    def mean(self, grads: list[torch.Tensor], halt: bool, updates: int) -> torch.Tensor:
        """Sum of this node's ``grads`` -> the mean over all nodes' gradients; sets ``stop``
        when any node voted to halt (every node then stops after this same update)."""
        g = sum_into(self.wire[:self.n], grads)
        self.wire[-FLAGS:] = torch.tensor([float(len(grads)), float(halt), float(updates)])
        self.link.all_reduce_(self.wire, self.what)
        count, n_halt, _ = self.wire[-FLAGS:].tolist()
        self.stop = n_halt > 0
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
            initial_broadcast(self.link, [self.store.x, *self.store.state.values()])
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

    def finished(self) -> bool:
        """Some node voted to halt: every node stops after this same update."""
        if self.reducer.stop and not self.ctx.glob["finish"]:
            self.ctx.glob["peer_finish"] = 1
        return self.reducer.stop
