"""A small CNN problem for the GPU benchmark (synthetic 3x32x32 images, 10 classes); workers
import it by path (``source=``), like a user's problem file."""
from __future__ import annotations

import torch
from torch import nn

from shmopt.problems import Problem
from shmopt.problems.builtin import cross_entropy_loss


def cnn_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))


def problem(n: int = 4096, seed: int = 0) -> Problem:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, 32, 32, generator=g)
    w = torch.randn(3 * 32 * 32, 10, generator=g)
    y = (X.reshape(n, -1) @ w).argmax(1)
    return Problem(name="cnn", model=cnn_model, loss=cross_entropy_loss, train=(X, y), batch_size=64,
                   lr={"amsgrad": 1e-3, "adam": 1e-3, "sgd": 0.05})
