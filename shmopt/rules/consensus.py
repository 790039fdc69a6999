"""Coupling updates between parameter replicas, in place over flat tensors.

* Leader pull (Teng et al., NeurIPS 2019):  x ← x − λ(x − x_leader)  = lerp(x, x_leader, λ).
* Elastic averaging (Zhang, Choromanska, LeCun, NeurIPS 2015), asynchronous form:
  e = α(x − x̃);  x ← x − e;  x̃ ← x̃ + e,  with α = β/P.
"""
from __future__ import annotations

import torch
from torch import Tensor


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
