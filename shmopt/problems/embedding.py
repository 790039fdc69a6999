"""``embedding-bag``: a generated sparse workload, an embedding table with sparse gradients.

Each sample is a bag of ``bag`` row indices drawn from a power law over ``rows`` rows (a few rows
are hot, most are rare, as words, items and entities are) and a 0/1 label. The model is
``nn.EmbeddingBag(rows, dim, mode="sum", sparse=True)`` followed by ``nn.Linear(dim, 1)``; a
step touches at most ``batch_size x bag`` rows of the table, whatever its size.

Data: the rank ``r`` of an index is ``floor(rows ** u) - 1`` with ``u ~ U[0, 1)`` (so
``P(r) ~ 1 / (r + 1)``), scattered over the table by ``i = r * 2654435761 mod rows``. Every row
``i`` carries a hidden score ``s_i = +-(0.5 + h_i)`` with ``h_i`` in ``[0, 1)``, both from a hash
of ``i`` (no table of scores is ever stored), and the label is ``1[sum_{i in bag} s_i > 0]``: a
linear function of per-row values, which the table can learn for the rows it sees. The held-out
split (``n // 4`` samples) measures how well it generalises to rare rows. ``optimum`` is unknown.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shmopt.checks import integer
from shmopt.problems.base import Problem, option_checks, seeded

__all__ = ["embedding_bag", "EMBEDDING_PROBLEMS"]

_SCATTER = 2654435761          # a prime: i -> i * _SCATTER mod rows is a bijection unless it divides rows
_HASH = 0x9E3779B1


class BagClassifier(nn.Module):
    """``EmbeddingBag(rows, dim, mode="sum", sparse=True) -> Linear(dim, 1)``: one logit per bag."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.table = nn.EmbeddingBag(rows, dim, mode="sum", sparse=True)
        nn.init.normal_(self.table.weight, std=0.01)
        self.head = nn.Linear(dim, 1)

    def forward(self, bags: Tensor) -> Tensor:
        return self.head(self.table(bags)).squeeze(-1)


def bag_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Mean binary cross-entropy of the bags' logits."""
    bags, y = batch
    return F.binary_cross_entropy_with_logits(model(bags), y)


def bag_accuracy(model: nn.Module, batch: tuple[Tensor, ...]) -> dict[str, float]:
    """Share of bags whose logit has the sign of the 0/1 label."""
    bags, y = batch
    return {"accuracy": float(((model(bags) > 0).float() == y).float().mean())}


def power_law_rows(count: int, rows: int, g: torch.Generator) -> Tensor:
    """``count`` row indices with ``P(rank r) ~ 1 / (r + 1)``, the ranks scattered over the table."""
    u = torch.rand(count, generator=g, dtype=torch.float64)
    rank = (torch.pow(float(rows), u).floor().long() - 1).clamp_(0, rows - 1)
    return rank * _SCATTER % rows


def row_scores(idx: Tensor) -> Tensor:
    """The hidden score of each row, from a hash of its index: ``+-(0.5 + h)``, ``h`` in [0, 1)."""
    h = (idx * _HASH) & 0xFFFFFFFF
    sign = ((h >> 7) & 1).double() * 2 - 1
    return sign * (0.5 + ((h >> 8) & 0xFFFF).double() / 65536.0)


def embedding_bag(rows: int = 100_000, dim: int = 32, bag: int = 8, n: int = 65_536, seed: int = 0,
                  batch_size: int = 64) -> Problem:
    """The ``embedding-bag`` problem (see the module docstring); the table is ``rows x dim``."""
    with option_checks("embedding-bag"):
        rows, dim = integer("rows", rows, 2, 2**31), integer("dim", dim, 1)
        bag, n = integer("bag", bag, 1), integer("n", n, 1)
        g = seeded(seed)
    n_eval = max(1, n // 4)
    bags = power_law_rows((n + n_eval) * bag, rows, g).view(n + n_eval, bag)
    y = (row_scores(bags).sum(dim=1) > 0).float()
    return Problem(
        name="embedding-bag",
        model=partial(BagClassifier, rows, dim),
        loss=bag_loss,
        metrics=bag_accuracy,
        train=(bags[:n].contiguous(), y[:n].contiguous()),
        eval=(bags[n:].contiguous(), y[n:].contiguous()),
        batch_size=batch_size,
        lr={"sgd": 0.5, "amsgrad": 0.02, "adam": 0.02},
        optimum=None,
        description=f"EmbeddingBag({rows:,} x {dim}, sparse) -> Linear, BCE on hashed row scores, "
                    f"bags of {bag}, n={n}",
    )


EMBEDDING_PROBLEMS = {"embedding-bag": embedding_bag}
