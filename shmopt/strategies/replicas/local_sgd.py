"""Local SGD: periodic model averaging (post-local SGD, Lin, Stich, Patel, Jaggi, "Don't Use Large
Mini-Batches, Use Local SGD", ICLR 2020; the DiLoCo family, Douillard et al., arXiv 2311.08105,
is its outer-optimizer form across nodes).

Every worker trains its replica x_i for H = τ local steps, then averages through a shared average
x̄ in the arena, lock-free (ours: the asynchronous form, as in asynchronous local SGD). Worker i
keeps x_s, the average it last restarted from, and at each of its averagings

    d = x_i − x_s;   x̄ ← x̄ + d / P;   x_i ← x̄;   x_s ← x̄

so x̄ = x0 + the mean of every worker's progress. When the P workers average at the same moment
from the same x_s this is plain periodic averaging, x̄ = (1/P) Σ x_i. Only parameters are averaged,
never the rule state. Across nodes the node averages are averaged by their delta (the "delta"
exchange, every --tau-global steps of each worker), as easgd's centres. The model is x̄ (the
method's centre buffer, :class:`~shmopt.strategies.replicas.base.CentredMethod`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...rules.averaging import delta_
from ..leader import due
from .base import CENTER, CentredMethod


@dataclass(frozen=True)
class LocalSGD(CentredMethod):
    name = "local-sgd"
    summary = ("local SGD: one replica per worker; every tau steps a worker adds its progress since its "
               "last average into a shared average and restarts from it (periodic model averaging, "
               "Lin et al. 2020)")
    across_nodes = "the node averages, averaged every --tau-global steps of each worker"

    @classmethod
    def from_options(cls, o: Any, workers: int, nnodes: int) -> "LocalSGD":
        return cls(**cls.common(o, workers))

    def coupler(self, rank: int, X: Tensor, extra: Mapping[str, Tensor], ctrl: np.ndarray,
                glob: np.void, node: int) -> "_Averaging":
        return _Averaging(self, X[rank], extra[CENTER])


class _Averaging:
    def __init__(self, m: LocalSGD, x: Tensor, average: Tensor) -> None:
        self.m, self.x, self.avg, self.last = m, x, average, 0
        self.x_s = average.clone()                 # the average this worker last restarted from
        self.d = torch.empty_like(x)

    def after_step(self, step: int, total: int) -> int:
        m, last, self.last = self.m, self.last, total
        if not due(step, m.tau, m.trigger, total, last, m.workers):
            return 0
        with torch.no_grad():
            self.avg.add_(delta_(self.d, self.x, self.x_s), alpha=1.0 / m.workers)
            self.x.copy_(self.avg)
            self.x_s.copy_(self.x)
        return 1
