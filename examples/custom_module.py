"""A user-defined problem: a small residual MLP with LayerNorm on the two-spirals data set.

Run it with::

    shmopt run examples/custom_module.py --algo apam --workers 2

A problem file only has to define ``problem(**options) -> shmopt.problems.Problem``.  Everything
the workers need (the model factory, the loss, and the ``nn.Module`` subclass they build) is
defined at module level, so it pickles by reference: shmopt imports this file under a fixed module
name in the parent and again in every worker before unpickling.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shmopt.problems import Problem


class ResidualBlock(nn.Module):
    """``x + Linear(GELU(Linear(LayerNorm(x))))`` (pre-norm residual block)."""

    def __init__(self, width: int, expansion: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, expansion * width)
        self.down = nn.Linear(expansion * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


class ResidualMLP(nn.Module):
    """Input projection, ``depth`` residual blocks, final LayerNorm and a linear classifier."""

    def __init__(self, d_in: int, width: int, depth: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))))


def build_model(width: int, depth: int) -> nn.Module:
    """Model factory (module-level so that ``partial(build_model, ...)`` pickles)."""
    return ResidualMLP(d_in=2, width=width, depth=depth, classes=2)


def spiral_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Mean cross-entropy; the objective (no regulariser)."""
    x, y = batch
    return F.cross_entropy(model(x), y)


def two_spirals(n: int, noise: float, turns: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points on two interleaved spirals (class 0 and its mirror image, class 1)."""
    half = n // 2
    t = torch.rand(n, generator=generator).sqrt() * turns * 2 * math.pi
    r = t / (turns * 2 * math.pi)
    points = torch.stack([r * torch.cos(t), r * torch.sin(t)], dim=1)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[:half] = 1
    points[:half] = -points[:half]
    points = points + noise * torch.randn(n, 2, generator=generator)
    perm = torch.randperm(n, generator=generator)
    return points[perm].contiguous(), labels[perm].contiguous()


def problem(n: int = 2048, width: int = 64, depth: int = 2, noise: float = 0.03, turns: float = 2.0,
            seed: int = 0, batch_size: int = 64) -> Problem:
    """Two spirals classified by a residual MLP; objective = mean cross-entropy.

    Options (pass them as key=value): ``n`` training points (plus ``n // 4`` held-out points for
    evaluation), ``width``/``depth`` of the network, ``noise`` (std of the Gaussian jitter),
    ``turns`` of each spiral, ``seed`` of the data, ``batch_size``.
    """
    g = torch.Generator().manual_seed(seed)
    X, y = two_spirals(n + max(1, n // 4), noise, turns, g)
    return Problem(
        name="two-spirals",
        model=partial(build_model, width, depth),
        loss=spiral_loss,
        train=(X[:n].contiguous(), y[:n].contiguous()),
        eval=(X[n:].contiguous(), y[n:].contiguous()),
        batch_size=batch_size,
        lr={"sgd": 0.05, "amsgrad": 3e-3, "adam": 3e-3},
        optimum=None,
        description=f"two spirals ({turns:g} turns), residual MLP width={width} depth={depth}, cross-entropy",
    )
