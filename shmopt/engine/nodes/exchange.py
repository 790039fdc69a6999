"""What every exchange between nodes has in common: the :class:`Exchange` contract, the vote it
carries, and the bookkeeping of the node figures.

Every exchange also carries this node's vote (done, halt) and its update count, summed over the
nodes in the same collective, so no exchange needs a second round trip to agree on stopping
(strategies.nodes). Collectives write into private buffers and are merged into the arena in one
pass: nothing is handed to torch's model averagers (they rebind ``p.data``, which would move a
parameter off the shared storage).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .link import NodeLink

FLAGS = 3                      # done, halt, updates: appended to every exchanged vector


@dataclass(frozen=True)
class Vote:
    """The nodes' votes summed by an exchange: how many are done, how many halt, and the updates
    of all nodes."""

    n_done: float
    n_halt: float
    all_updates: int


def vote_of(flags) -> Vote:
    done, halt, updates = (float(v) for v in flags)
    return Vote(done, halt, int(round(updates)))


class Exchange(Protocol):
    """One kind of exchange between nodes, run by the node link (link_loop).

    Contract: :meth:`initial` runs once on every node before training (the same collectives in
    the same order everywhere) and leaves every node with node 0's starting point;
    :meth:`exchange` is one collective round, called by every node the same number of times,
    while this node's workers keep training (it must keep their updates made in the meantime);
    with ``final`` no update is in flight and every node must end with the same bytes. It
    returns the summed :class:`Vote`. ``what`` names it in a lost-node message."""

    what: str

    def initial(self) -> None: ...

    def exchange(self, done: bool, halt: bool, updates: int, final: bool = False) -> Vote: ...


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
