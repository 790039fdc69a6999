"""Elastic averaging SGD (Zhang, Choromanska, LeCun, "Deep learning with Elastic Averaging SGD",
NeurIPS 2015), asynchronous form: a centre variable x̃ in the arena; every τ local steps worker i

    e = α (x_i − x̃);   x_i ← x_i − e;   x̃ ← x̃ + e,      α = β / P

(β = 0.9 in the EASGD paper). Across nodes each node keeps its centre; the node link averages the
centres by their delta. The model is the centre.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from ...errors import ConfigError
from ...rules.consensus import elastic_
from ..leader import due
from .base import CENTER, CentredMethod


@dataclass(frozen=True)
class ElasticAveraging(CentredMethod):
    name = "easgd"
    summary = ("elastic averaging SGD: one replica per worker coupled to a shared centre variable every "
               "tau steps, alpha = beta / P (Zhang et al. 2015)")
    across_nodes = "the node centres, averaged every --tau-global steps of each worker"

    alpha: float = 0.0

    @classmethod
    def from_options(cls, o: Any, workers: int, nnodes: int) -> "ElasticAveraging":
        if not 0.0 < o.beta <= workers:
            raise ConfigError(f"invalid beta={o.beta!r}: must be in (0, workers] "
                              f"(alpha = beta / workers <= 1)")
        return cls(**cls.common(o, workers), alpha=o.beta / workers)

    def coupler(self, rank: int, X: Tensor, extra: Mapping[str, Tensor], ctrl: np.ndarray,
                glob: np.void, node: int) -> "_Elastic":
        return _Elastic(self, X[rank], extra[CENTER])


class _Elastic:
    def __init__(self, m: ElasticAveraging, x: Tensor, center: Tensor) -> None:
        self.m, self.x, self.center, self.last = m, x, center, 0

    def after_step(self, step: int, total: int) -> int:
        m, last, self.last = self.m, self.last, total
        if not due(step, m.tau, m.trigger, total, last, m.workers):
            return 0
        elastic_(self.x, self.center, m.alpha)
        return 1
