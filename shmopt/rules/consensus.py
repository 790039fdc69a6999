"""Combining flat tensors: averages, distances, and couplings between parameter replicas.

* K-of-P average (Dutta et al., AISTATS 2018):  g = (1/K) Σ_l g_l.
* Squared distance for the staleness-compensated rate:  ‖w − w_read‖²₂.
* Leader pull (Teng et al., NeurIPS 2019):  x ← x − λ(x − x_leader)  = lerp(x, x_leader, λ).
* Elastic averaging (Zhang, Choromanska, LeCun, NeurIPS 2015), asynchronous form:
  e = α(x − x̃);  x ← x − e;  x̃ ← x̃ + e,  with α = β/P.
"""
from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def sum_into(out: Tensor, tensors: list[Tensor]) -> Tensor:
    """out = sum of ``tensors`` (in place, no temporary); returns out."""
    out.copy_(tensors[0])
    for t in tensors[1:]:
        out.add_(t)
    return out


def average_into(out: Tensor, tensors: list[Tensor]) -> Tensor:
    """out = mean of ``tensors`` (in place, no temporary); returns out."""
    return sum_into(out, tensors).div_(len(tensors))


@torch.no_grad()
def mean_of_sum_(total: Tensor, count: float) -> Tensor:
    """total ← total / count: the mean of ``count`` summed terms (an all-reduced sum), in place."""
    return total.div_(count)


@torch.no_grad()
def sq_distance(a: Tensor, b: Tensor) -> float:
    """‖a − b‖²₂."""
    return float(torch.dist(a, b) ** 2)


@torch.no_grad()
def leader_pull_(x: Tensor, leader: Tensor, lam: float) -> None:
    """Move ``x`` a fraction ``lam`` of the way to ``leader`` (in place)."""
    x.lerp_(leader, lam)


@torch.no_grad()
def elastic_(x: Tensor, center: Tensor, alpha: float) -> None:
    """One EASGD exchange: both ``x`` and ``center`` move by e = alpha (x − center)."""
    e = torch.sub(x, center).mul_(alpha)
    x.sub_(e)
    center.add_(e)
