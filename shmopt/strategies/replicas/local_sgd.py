"""Local SGD: periodic model averaging (post-local SGD, Lin, Stich, Patel, Jaggi, "Don't Use Large
Mini-Batches, Use Local SGD", ICLR 2020; the DiLoCo family, Douillard et al., arXiv 2311.08105,
is its outer-optimizer form across nodes).

Every worker trains its replica x_i for H = τ local steps, then averages through a shared average
x̄ in the arena, lock-free (ours: the asynchronous form, as in asynchronous local SGD). Worker i
keeps x_s,i, the average it last restarted from (a row of the arena, so a checkpoint, a resume and
a restarted worker keep it), and at each of its averagings

    d = x_i − x_s,i;   x̄ ← x̄ + d / P;   x_i ← x̄;   x_s,i ← x̄

so x̄ = x0 + the mean of every worker's progress. When the P workers average one after the other
from the same x_s this is plain periodic averaging, x̄ = (1/P) Σ x_i. The add is Hogwild's: two
workers adding into the same coordinates at the same instant can lose part of one increment (as
easgd's centre can); with H local steps between averagings such overlaps are rare. Only
parameters are averaged, never the rule state. Across nodes the node averages are averaged by
their delta (the "delta" exchange, every --tau-global steps of each worker), as easgd's centres.
The model is x̄ (the method's centre buffer,
:class:`~shmopt.strategies.replicas.base.CentredMethod`).
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
from .base import CENTER, CentredMethod, Spec

RESTART = "restart"            # x_s of every worker: the average it last restarted from (P x n)


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

    def buffers(self, n: int, nnodes: int) -> list[Spec]:
        return super().buffers(n, nnodes) + [(RESTART, (self.workers, n))]

    def init(self, extra: Mapping[str, Tensor], x0: Tensor) -> None:
        super().init(extra, x0)
        extra[RESTART][...] = x0

    def coupler(self, rank: int, X: Tensor, extra: Mapping[str, Tensor], ctrl: np.ndarray,
                glob: np.void, node: int) -> "_Averaging":
        return _Averaging(self, X[rank], extra[CENTER], extra[RESTART][rank])


class _Averaging:
    def __init__(self, m: LocalSGD, x: Tensor, average: Tensor, x_s: Tensor) -> None:
        self.m, self.x, self.avg, self.x_s, self.last = m, x, average, x_s, 0
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
