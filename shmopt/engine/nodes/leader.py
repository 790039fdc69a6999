"""The "leader" exchange (lsgd across nodes): all_gather of each node's local leader (score,
node, worker), then a broadcast of the global leader's replica from its node into the half of
``gleader`` that is not published; then it is published (``gl_index``, ``gl_version``) and every
worker pulls toward it once (the replica method's coupler)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ...strategies.nodes import select_global
from .exchange import Vote, initial_broadcast
from .link import NodeLink


class LeaderExchange:
    """Find the best replica of all nodes and give it to every node."""

    what = "the leader exchange"

    def __init__(self, link: NodeLink, X: torch.Tensor, gleader: torch.Tensor, glob: np.void,
                 local_leader: Callable[[], tuple[int, float]]) -> None:
        self.link, self.X, self.G, self.glob = link, X, gleader, glob
        self.local_leader = local_leader          # () -> (worker, its score), from the loss rings

    def initial(self) -> None:
        initial_broadcast(self.link, [self.X])
        self.glob["gl_version"] = 0

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
