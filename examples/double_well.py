"""A symmetric non-convex problem where averaging stalls and Leader SGD does not.

f(x) = mean_j (x_j² − 1)², minima at x = ±1 (f = 0), a symmetric stationary point at x = 0
(f = 1). Stochastic gradients: each sample ξ ~ N(0, σ²) adds ξ·x to the objective (zero mean).

Replicas start on both sides of the barrier: worker ranks 0, 2, ... at +a, ranks 1, 3, ... at −a
(the rank comes from ``SHMOPT_RANK``, which shmopt sets in every worker; run with
``--replica-init independent``). Outside a worker the model starts at the symmetric point 0, so
the EASGD centre starts at the replicas' mean. EASGD's elastic averaging balances the two sides
and leaves its centre near x = 0 (f ≈ 1); Leader SGD pulls everyone toward the best replica and
reaches a minimum (f ≈ 0). Teng et al. (NeurIPS 2019), section 3.

    shmopt run examples/double_well.py --algo lsgd  --workers 4 --replica-init independent --steps 4000
    shmopt run examples/double_well.py --algo easgd --workers 4 --replica-init independent --steps 4000
"""
from __future__ import annotations

import functools
import os

import torch
from torch import nn

from shmopt.problems import Problem


class Position(nn.Module):
    """The parameters are the point x itself."""

    def __init__(self, d: int, start: float) -> None:
        super().__init__()
        rank = os.environ.get("SHMOPT_RANK")
        side = 0.0 if rank is None else (1.0 if int(rank) % 2 == 0 else -1.0)
        self.x = nn.Parameter(torch.full((d,), side * start))

    def forward(self) -> torch.Tensor:
        return self.x


def make_model(d: int, start: float) -> nn.Module:
    return Position(d, start)


def double_well_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x = model()
    (xi,) = batch
    return (x.pow(2) - 1).pow(2).mean() + (xi.mean(0) * x).mean()


def problem(d: int = 8, start: float = 0.9, noise: float = 0.5, n: int = 4096, seed: int = 0,
            batch_size: int = 16) -> Problem:
    g = torch.Generator().manual_seed(seed)
    xi = noise * torch.randn(n, d, generator=g)
    xi -= xi.mean(0)                      # exactly zero-mean: the objective is f itself
    return Problem("double_well", functools.partial(make_model, d, start), double_well_loss, (xi,),
                   batch_size=batch_size, lr={"sgd": 0.01, "amsgrad": 0.01, "adam": 0.01},
                   optimum=0.0, description="f(x) = mean (x^2 - 1)^2, minima at +-1, barrier at 0")
