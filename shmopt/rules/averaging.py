"""Averaging a model across nodes (local SGD, DiLoCo) over flat tensors, in place.

Every node trains x locally (lock-free, inside the node) and keeps x_s, the consensus at the
last exchange, identical on every node. An exchange all-reduces d = x − x_s; with the mean d̄
over the N nodes the consensus moves by s:

    plain averaging:  s = d̄
    DiLoCo (Douillard et al., arXiv 2311.08105): outer Nesterov SGD on the pseudo-gradient
                      Δ = −d̄:   b ← μ·b + Δ;   s = −η_o·(Δ + μ·b)

then ``x ← x + (s − d)`` keeps every local update made while the exchange was in flight, and
``x_s ← x_s + s``. With η_o = 1 and μ = 0 both steps give plain averaging.
"""
from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def delta_(out: Tensor, x: Tensor, x_sync: Tensor) -> Tensor:
    """out = x − x_s (the local progress since the last exchange)."""
    return torch.sub(x, x_sync, out=out)


@torch.no_grad()
def outer_step_(mean_delta: Tensor, momentum: Tensor | None, lr: float = 1.0, mu: float = 0.0) -> Tensor:
    """Turn the averaged delta d̄ into the consensus step s, in place (see the module docstring)."""
    if momentum is None or mu == 0.0:
        return mean_delta.mul_(lr) if lr != 1.0 else mean_delta
    grad = mean_delta.neg_()                      # Δ = −d̄
    momentum.mul_(mu).add_(grad)                  # b ← μb + Δ
    return grad.add_(momentum, alpha=mu).mul_(-lr)   # s = −η_o(Δ + μb)


@torch.no_grad()
def merge_(x: Tensor, x_sync: Tensor, sent: Tensor, step: Tensor, final: bool = False) -> None:
    """x ← x + (s − d) (one pass over the shared x), x_s ← x_s + s. ``final`` (no local update
    can be in flight): x ← x_s, so every node ends with the same bytes. ``sent`` is clobbered."""
    x_sync.add_(step)
    if final:
        x.copy_(x_sync)
        return
    x.add_(sent.neg_().add_(step))
