"""The "delta" exchange: buffers averaged across nodes by their delta since the last exchange
(apam/hogwild direct: x, and the rule state with ``--sync-state``; replica methods: the buffers
they name, such as easgd's centre).

All_reduce of d = x − x_s while the workers keep training, then the merge of rules.averaging,
which keeps the updates made during the exchange (and DiLoCo's outer step when asked).
"""
from __future__ import annotations

import torch

from ...rules.averaging import delta_, merge_, outer_step_
from ...rules.consensus import mean_of_sum_
from .exchange import FLAGS, Vote, initial_broadcast, vote_of
from .link import NodeLink


class DeltaExchange:
    """Average ``buffers`` across nodes by their delta since the last exchange."""

    what = "the model exchange"

    def __init__(self, link: NodeLink, buffers: list[torch.Tensor], outer_lr: float = 1.0,
                 outer_momentum: float = 0.0) -> None:
        self.link, self.bufs = link, [b.view(-1) for b in buffers]
        self.sizes = [b.numel() for b in self.bufs]
        total = sum(self.sizes)
        self.wire = torch.zeros(total + FLAGS)
        self.sent = torch.zeros(total)
        self.momentum = torch.zeros(total) if outer_momentum > 0 else None
        self.lr, self.mu = outer_lr, outer_momentum
        self.sync: list[torch.Tensor] = []

    def _split(self, t: torch.Tensor) -> list[torch.Tensor]:
        return list(t[:sum(self.sizes)].split(self.sizes))

    def initial(self) -> None:
        """Node 0's buffers everywhere (a fresh start or a resume); the consensus starts there."""
        initial_broadcast(self.link, self.bufs)
        self.sync = [b.clone() for b in self.bufs]

    def exchange(self, done: bool, halt: bool, updates: int, final: bool = False) -> Vote:
        for out, b, s in zip(self._split(self.sent), self.bufs, self.sync):
            delta_(out, b, s)
        self.wire[:self.sent.numel()].copy_(self.sent)
        self.wire[-FLAGS:] = torch.tensor([float(done), float(halt), float(updates)])
        self.link.all_reduce_(self.wire, self.what)
        vote = vote_of(self.wire[-FLAGS:].tolist())
        mean = mean_of_sum_(self.wire[:-FLAGS], self.link.nnodes)
        step = outer_step_(mean, self.momentum, self.lr, self.mu)
        for b, s, d, st in zip(self.bufs, self.sync, self._split(self.sent), self._split(step)):
            merge_(b, s, d, st, final=final)
        return vote
