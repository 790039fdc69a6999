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


# ------------------------------------------------ tables: rows touched since the last exchange
@torch.no_grad()
def row_delta(table: Tensor, table_sync: Tensor, rows: Tensor) -> Tensor:
    """d = W[rows] − W_s[rows]: the local progress of the rows touched since the last exchange."""
    return table.index_select(0, rows).sub_(table_sync.index_select(0, rows))


@torch.no_grad()
def row_step(rows: Tensor, deltas: Tensor, nnodes: int, lr: float = 1.0) -> tuple[Tensor, Tensor]:
    """The consensus step of a table from every node's (rows, deltas), stacked:
    ``s_i = lr · (1/N) Σ_nodes d_i`` over the union of the rows (a node that did not send row i
    contributes d_i = 0, as an untouched coordinate does to the dense mean); returns (rows, s)."""
    uniq, inverse = torch.unique(rows, sorted=True, return_inverse=True)
    step = torch.zeros((uniq.numel(), deltas.shape[1]), dtype=deltas.dtype).index_add_(0, inverse, deltas)
    return uniq, step.mul_(lr / nnodes)


@torch.no_grad()
def merge_rows_(table: Tensor, table_sync: Tensor, sent_rows: Tensor, sent: Tensor, rows: Tensor,
                step: Tensor) -> None:
    """:func:`merge_` on rows: W ← W + (s − d) and W_s ← W_s + s, with d this node's sent deltas
    (zero on the rows it did not send): only the rows some node touched are written."""
    table_sync.index_add_(0, rows, step)
    table.index_add_(0, rows, step)
    table.index_add_(0, sent_rows, sent.neg_())
