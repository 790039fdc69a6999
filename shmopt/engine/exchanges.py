"""What one exchange between nodes does, per family, on the node link's collectives.

Every exchange also carries this node's vote (done, halt) and its update count, summed over the
nodes in the same collective, so no exchange needs a second round trip to agree on stopping
(strategies.nodes). Collectives write into private buffers and are merged into the arena in one
pass: nothing is handed to torch's model averagers (they rebind ``p.data``, which would move a
parameter off the shared storage).

* :class:`DeltaExchange` (apam/hogwild direct: x, and the rule state with ``--sync-state``;
  easgd: the centre): all_reduce of d = x − x_s while the workers keep training, then the merge
  of rules.averaging, which keeps the updates made during the exchange.
* :class:`LeaderExchange` (lsgd): all_gather of each node's local leader (score, node, worker),
  then a broadcast of the global leader's replica from its node into the half of ``gleader``
  that is not published; then it is published (``gl_index``, ``gl_version``) and every worker
  pulls toward it once.
* :class:`GradientReducer` (sync): all_reduce of the node's summed gradient and its count, one
  collective per update, so N nodes of P workers apply exactly the mean over N·P gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch

from ..rules.averaging import delta_, merge_, outer_step_
from ..rules.consensus import sum_into
from ..strategies.leader import select_leader, windowed_means
from ..strategies.nodes import select_global
from .node_link import NodeLink

FLAGS = 3                      # done, halt, updates: appended to every exchanged vector


@dataclass(frozen=True)
class Vote:
    n_done: float
    n_halt: float
    all_updates: int


def _vote(flags) -> Vote:
    done, halt, updates = (float(v) for v in flags)
    return Vote(done, halt, int(round(updates)))


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
        vote = _vote(self.wire[-FLAGS:].tolist())
        step = outer_step_(self.wire[:-FLAGS].div_(self.link.nnodes), self.momentum, self.lr, self.mu)
        for b, s, d, st in zip(self.bufs, self.sync, self._split(self.sent), self._split(step)):
            merge_(b, s, d, st, final=final)
        return vote


class LeaderExchange:
    """lsgd across nodes: find the best replica of all nodes and give it to every node."""

    what = "the leader exchange"

    def __init__(self, link: NodeLink, X: torch.Tensor, gleader: torch.Tensor, glob: np.void,
                 ctrl: np.ndarray, workers: int, window: int) -> None:
        self.link, self.X, self.G, self.glob = link, X, gleader, glob
        self.losses, self.counts = ctrl["losses"][:workers], ctrl["loss_count"][:workers]
        self.window = window

    def initial(self) -> None:
        initial_broadcast(self.link, [self.X])
        self.glob["gl_version"] = 0

    def local_leader(self) -> tuple[int, float]:
        means = windowed_means(self.losses, self.counts, self.window)
        w = select_leader(means)
        return w, means[w]

    def exchange(self, done: bool, halt: bool, updates: int, final: bool = False) -> Vote:
        worker, score = self.local_leader()
        row = torch.tensor([score, self.link.rank, worker, float(done), float(halt), float(updates)],
                           dtype=torch.float64)
        rows = self.link.all_gather(row, self.what)
        node, gworker, gscore = select_global(rows.tolist())
        g = self.glob
        stage = self.G[1 - int(g["gl_index"])]
        if node == self.link.rank:
            stage.copy_(self.X[gworker])
        self.link.broadcast_(stage, node, self.what)
        g["gl_node"], g["gl_worker"], g["gl_score"], g["local_score"] = node, gworker, gscore, score
        g["gl_index"] = 1 - int(g["gl_index"])
        g["gl_version"] += 1                     # published: workers pull toward it once
        sums = rows[:, 3:].sum(0).tolist()
        return Vote(sums[0], sums[1], int(round(sums[2])))


class GradientReducer:
    """sync across nodes: the mean of every node's gradients, one all_reduce per update."""

    what = "the gradient all-reduce"

    def __init__(self, link: NodeLink, n: int) -> None:
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
        return g.div_(count)


def initial_broadcast(link: NodeLink, tensors: list[torch.Tensor]) -> None:
    """Node 0's parameters and rule state everywhere before training starts."""
    for t in tensors:
        link.broadcast_(t, 0, "the start")


def book(glob: np.void, link: NodeLink, vote: Vote | None = None, stale: int | None = None) -> None:
    """The node figures of the summary, in the global record (the supervisor reads them)."""
    glob["exchanges"] += 1
    glob["comm_s"] = link.comm_s
    glob["wire_bytes"] = link.bytes
    if vote is not None:
        glob["all_updates"] = vote.all_updates
    if stale is not None:
        glob["node_stale_sum"] += stale
        if stale > glob["node_stale_max"]:
            glob["node_stale_max"] = stale

