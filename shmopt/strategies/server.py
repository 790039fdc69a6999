"""K-of-P aggregation for server protocols (Dutta et al., AISTATS 2018, table in section 3).

One applier (the server) receives gradients from P learners and applies the average of K of them:
``w_{j+1} = w_j − (η/K) Σ_{l=1..K} g(w_τ(l,j))``. The variants differ in what they count, whether
stale gradients are kept, who is cancelled and who receives the new parameters:

=============  ===================  ==============  ===============  =======================
variant        counts               stale kept?     cancelled        who gets w_{j+1}
=============  ===================  ==============  ===============  =======================
k-sync         K distinct learners  no              the others       all P (restart)
k-batch-sync   K mini-batches       no              the others       all P (restart)
k-async        K distinct learners  yes             nobody           the K pushers
k-batch-async  K mini-batches       yes             nobody           each pusher at once
=============  ===================  ==============  ===============  =======================

K = P of k-sync is fully synchronous SGD; K = 1 of k-async is asynchronous SGD (APAM's
master-worker form). This module is pure bookkeeping over integers: the engine feeds it arrivals
and carries out its decisions, and tests drive it with scripted arrival orders. The same logic
serves a node's applier (P learners) and, across nodes, the global applier (the N·P learners of
every node, numbered node · P + rank); a learner can be retired for good (a lost node, under
``--on-node-failure continue``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import ConfigError

VARIANTS = ("k-sync", "k-batch-sync", "k-async", "k-batch-async")


class WorkerMode(enum.Enum):
    """What a learner does right after pushing a gradient."""

    WAIT = "wait"   # idle until the server releases it with new parameters
    SAME = "same"   # compute another mini-batch on the same parameters (until cancelled)
    PULL = "pull"   # read the current parameters and go on, never idle


@dataclass(frozen=True)
class Arrival:
    rank: int
    version: int        # version of the parameters the gradient was computed on
    slot: int = 0       # which of the learner's gradient slots holds it


@dataclass
class Decision:
    """Outcome of one update: the gradients to average and who to wake."""

    batch: list[Arrival]
    staleness: list[int]
    release: list[int]              # ranks to wake (they read the new parameters)
    discarded: list[Arrival] = field(default_factory=list)   # pending ones made obsolete


@dataclass
class KAggregator:
    variant: str
    workers: int
    k: int
    max_staleness: int | None = None
    pending: list[Arrival] = field(default_factory=list)
    retired: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}: choose one of {', '.join(VARIANTS)}")
        if not 1 <= self.k <= self.workers:
            raise ConfigError(f"invalid k={self.k}: must be 1 <= k <= workers ({self.workers})")

    @property
    def synchronous(self) -> bool:
        return self.variant in ("k-sync", "k-batch-sync")

    @property
    def per_batch(self) -> bool:
        return self.variant in ("k-batch-sync", "k-batch-async")

    @property
    def mode(self) -> WorkerMode:
        return {"k-sync": WorkerMode.WAIT, "k-async": WorkerMode.WAIT,
                "k-batch-sync": WorkerMode.SAME, "k-batch-async": WorkerMode.PULL}[self.variant]

    @property
    def wakes_refused(self) -> bool:
        """A refused gradient's learner must be woken: it waits for a release (k-async) that no
        update would send it. (Synchronous variants release everyone at the update that made
        the gradient obsolete.)"""
        return self.mode is WorkerMode.WAIT and not self.synchronous

    @property
    def live(self) -> list[int]:
        return [r for r in range(self.workers) if r not in self.retired]

    def retire(self, ranks: list[int]) -> list[Arrival]:
        """Lose learners for good; returns their pending gradients (to be dropped). Raises
        ValueError when K can no longer be reached (distinct-learner variants need K live ones)."""
        self.retired |= set(ranks)
        gone = [a for a in self.pending if a.rank in self.retired]
        self.pending = [a for a in self.pending if a.rank not in self.retired]
        need = 1 if self.per_batch else self.k
        if len(self.live) < need:
            raise ValueError(f"{self.variant} with K={self.k} needs {need} live learner(s); "
                             f"{len(self.live)} are left")
        return gone

    def offer(self, arrival: Arrival, version: int) -> str:
        """Take one pushed gradient; returns ``"accepted"``, ``"obsolete"`` (sync variants: computed
        on a version that is no longer current; or from a retired learner) or ``"stale"``
        (beyond ``max_staleness``)."""
        if arrival.rank in self.retired:
            return "obsolete"
        tau = version - arrival.version
        if self.synchronous and tau != 0:
            return "obsolete"
        if self.max_staleness is not None and tau > self.max_staleness:
            return "stale"
        if not self.per_batch and any(a.rank == arrival.rank for a in self.pending):
            raise RuntimeError(f"learner {arrival.rank} pushed twice before the update "
                               f"({self.variant} counts distinct learners)")
        self.pending.append(arrival)
        return "accepted"

    def expire(self, version: int) -> list[Arrival]:
        """Pending gradients that other updates have made staler than ``max_staleness`` since
        they were offered: removed (to be dropped), so none is ever applied beyond the bound."""
        if self.max_staleness is None:
            return []
        out = [a for a in self.pending if version - a.version > self.max_staleness]
        if out:
            self.pending = [a for a in self.pending if version - a.version <= self.max_staleness]
        return out

    def resize(self, k: int) -> None:
        """Change K between two decisions (adaptive K). Safe with gradients pending, in every
        variant: nothing pending is lost or applied twice. K grows: the update waits for more
        (every live learner is either pending or computing, so K <= P arrive); K shrinks:
        ``ready()`` at once, and ``take`` uses the first K (sync variants discard the rest,
        obsolete at the new version; async ones keep them for the next update)."""
        if not 1 <= k <= self.workers:
            raise ValueError(f"invalid k={k}: must be 1 <= k <= workers ({self.workers})")
        if not self.per_batch and k > len(self.live):
            raise ValueError(f"{self.variant} with K={k} needs {k} live learners; "
                             f"{len(self.live)} are left")
        self.k = k

    def ready(self) -> bool:
        return len(self.pending) >= self.k

    def take(self, version: int) -> Decision:
        """Form the update from the first K pending gradients (call when ``ready()``)."""
        batch, rest = self.pending[:self.k], self.pending[self.k:]
        staleness = [version - a.version for a in batch]
        if self.synchronous:
            release, discarded, self.pending = self.live, rest, []
        else:
            self.pending = rest
            discarded = []
            release = sorted({a.rank for a in batch}) if self.mode is WorkerMode.WAIT else []
        return Decision(batch, staleness, release, discarded)
