"""Leader SGD (Teng, Gao, Chalus, Choromanska, Goldfarb, Weller, "Leader Stochastic Gradient
Descent for Distributed Training of Deep Learning Models", NeurIPS 2019).

Every worker trains its replica x and every τ local steps is pulled toward the leader of its
group, the worker with the lowest windowed mean loss (:mod:`shmopt.strategies.leader`):

    x ← x − λ (x − x̃_group)            every τ   steps   (not the leader itself)
    x ← x − λ_G (x − x̃)                every τ_G steps   (multi-leader: the best of all)

The leader's replica is read straight from the arena (no broadcast); only parameters are pulled,
never the rule state. Across nodes the node is the group: the node link's "leader" exchange
publishes the best replica of all nodes in ``gleader`` and every other worker pulls toward it once
per published leader, with λ_G. The model is the final leader.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from ...errors import ConfigError
from ...rules.consensus import leader_pull_
from ..leader import LOSS_WINDOW, due, groups, select_leader, windowed_means
from .base import ReplicaMethod, Spec

GLOBAL_LEADER = "gleader"      # across nodes: [published, being received] (the node link writes it)


@dataclass(frozen=True)
class LeaderSGD(ReplicaMethod):
    name = "lsgd"
    summary = ("Leader SGD: one replica per worker; every tau steps a non-leader is pulled toward the "
               "worker with the lowest recent loss; --groups G for multi-leader (Teng et al. 2019)")
    node_exchange = "leader"
    across_nodes = ("the best replica of every node (its local leader), every --tau-global steps of "
                    "each worker")
    scratch = (GLOBAL_LEADER,)
    has_leader = True
    leader_buffer = GLOBAL_LEADER

    lam: float = 0.1
    lam_global: float = 0.1
    window: int = 10
    group: tuple[int, ...] = ()                   # the group index of each rank
    members: tuple[tuple[int, ...], ...] = ()     # the ranks of each rank's group
    n_groups: int = 1

    @classmethod
    def from_options(cls, o: Any, workers: int, nnodes: int) -> "LeaderSGD":
        if nnodes > 1 and o.groups != 1:
            raise ConfigError("lsgd across nodes: each node is one group with its local leader; "
                              "drop --groups")
        if o.window > LOSS_WINDOW:
            raise ConfigError(f"invalid window={o.window}: at most {LOSS_WINDOW} losses are kept")
        parts = groups(workers, o.groups)
        group = tuple(next(i for i, g in enumerate(parts) if r in g) for r in range(workers))
        return cls(**cls.common(o, workers), lam=o.lam, lam_global=o.lam_global, window=o.window,
                   group=group, members=tuple(tuple(parts[i]) for i in group), n_groups=o.groups)

    def buffers(self, n: int, nnodes: int) -> list[Spec]:
        return [(GLOBAL_LEADER, (2, n))] if nnodes > 1 else []

    def group_of(self, rank: int) -> int:
        return self.group[rank] if rank < len(self.group) else 0

    def leader(self, losses: np.ndarray, counts: np.ndarray) -> int | None:
        return select_leader(windowed_means(losses, counts, self.window))

    def local_leader(self, losses: np.ndarray, counts: np.ndarray) -> tuple[int, float]:
        """(leader, its windowed mean loss) of the node's workers."""
        means = windowed_means(losses, counts, self.window)
        w = select_leader(means)
        return w, means[w]

    def model(self, X: Tensor, mbuf: Tensor | None, extra: Mapping[str, Tensor], glob: np.void,
              leader: int | None) -> tuple[Tensor, Tensor | None]:
        row = leader if leader is not None else 0
        mb = None if mbuf is None else mbuf[row]
        G = extra.get(GLOBAL_LEADER)
        if G is not None and glob["gl_version"] > 0:          # across nodes: the global leader
            return G[int(glob["gl_index"])], mb
        return X[row], mb

    def coupler(self, rank: int, X: Tensor, extra: Mapping[str, Tensor], ctrl: np.ndarray,
                glob: np.void, node: int) -> "_Pulls":
        return _Pulls(self, rank, X, extra.get(GLOBAL_LEADER), ctrl, glob, node)


class _Pulls:
    def __init__(self, m: LeaderSGD, rank: int, X: Tensor, G: Tensor | None, ctrl: np.ndarray,
                 glob: np.void, node: int) -> None:
        P = m.workers
        self.m, self.rank, self.X, self.x, self.G, self.glob = m, rank, X, X[rank], G, glob
        self.losses, self.counts = ctrl["losses"][:P], ctrl["loss_count"][:P]
        self.mine = m.members[rank] if m.members else ()
        self.me = (node, rank)
        self.last_local = self.last_global = self.seen_global = 0

    def after_step(self, step: int, total: int) -> int:
        m, pulls, means = self.m, 0, None
        if due(step, m.tau, m.trigger, total, self.last_local, m.workers):
            means = windowed_means(self.losses, self.counts, m.window)
            pulls += self._pull(select_leader(means, self.mine), m.lam)
        glob = self.glob
        if self.G is not None and (v := int(glob["gl_version"])) > self.seen_global:
            self.seen_global = v
            if (int(glob["gl_node"]), int(glob["gl_worker"])) != self.me:
                leader_pull_(self.x, self.G[int(glob["gl_index"])], m.lam_global)
                pulls += 1
        if m.n_groups > 1 and due(step, m.tau_global, m.trigger, total, self.last_global, m.workers):
            means = means or windowed_means(self.losses, self.counts, m.window)
            pulls += self._pull(select_leader(means), m.lam_global)
        self.last_local = self.last_global = total
        return pulls

    def _pull(self, leader: int, lam: float) -> int:
        if leader == self.rank:
            return 0
        leader_pull_(self.x, self.X[leader], lam)
        return 1
