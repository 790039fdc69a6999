"""A problem whose augment only a worker can apply: it sets every label to 1, so a model trained
on augmented batches predicts 1 for every sample (the raw labels are half 0, half 1)."""
from __future__ import annotations

import functools

import torch
from torch import nn

from shmopt.problems import Problem
from shmopt.problems.builtin import binary_accuracy, logreg_loss


def _model() -> nn.Module:
    return nn.Linear(4, 1)


def all_ones(batch, generator):
    x, y = batch
    return x + 0.01 * torch.randn(x.shape, generator=generator), torch.ones_like(y)


def problem() -> Problem:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=g)
    y = (x[:, 0] > 0).float()
    return Problem("augmented", _model, functools.partial(logreg_loss, l2=0.0), (x, y),
                   metrics=binary_accuracy, augment=all_ones, batch_size=32, lr={"sgd": 0.5})
