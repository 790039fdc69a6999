"""Problems with tables for the tests: a user's own module with a sparse gradient (no
nn.Embedding), and a data set whose later rows hold an index past the table's end."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from shmopt import Problem

ROWS, DIM = 500, 4


class OwnLookup(nn.Module):
    """A user's module: its own weight, looked up with F.embedding(sparse=True)."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(rows, dim) * 0.1)
        self.head = nn.Linear(dim, 1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(F.embedding(idx, self.weight, sparse=True).sum(1)).squeeze(-1)


def loss(model: nn.Module, batch) -> torch.Tensor:
    idx, y = batch
    return F.binary_cross_entropy_with_logits(model(idx), y)


def _data(n: int, bad_from: int | None = None):
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, ROWS // 2, (n, 3), generator=g)    # rows >= ROWS // 2 are never looked up
    y = (idx.sum(1) % 2).float()
    if bad_from is not None:
        idx[bad_from:, 0] = ROWS + 7
    return idx, y


def problem(bad_from: int | None = None) -> Problem:
    """The user's own lookup; ``bad_from``: the data rows from there on hold an index past the end."""
    return Problem("own-lookup", partial(OwnLookup, ROWS, DIM), loss, _data(512, bad_from), batch_size=16,
                   lr={"sgd": 0.5, "amsgrad": 0.05})
