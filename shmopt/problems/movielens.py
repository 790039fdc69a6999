"""``movielens-mf``: biased matrix factorisation on the MovieLens ml-latest-small ratings.

Data: the ``movielens`` data frame of R's dslabs package (100,004 ratings of 9,066 movies by 671
users), read from its lazy-load database (:mod:`.rdata`) as ``shmopt data fetch movielens`` keeps
it (:mod:`.packages`), or from a user's own ``Rdata.rdb`` (``-o path=...``). Users and movies are
renumbered 0..U-1 and 0..I-1; a seeded permutation keeps 90% for training and 10% held out.

Model: ``r_hat = mu + b_u + b_i + <p_u, q_i>``; ``p``, ``q`` (``dim`` wide) and the biases ``b``
are ``nn.Embedding(sparse=True)`` tables, ``mu`` a dense parameter started at the training mean.
Loss: mean squared error + ``l2`` x the mean squared norm of the looked-up factor rows. Metric:
``rmse`` on the held-out ratings.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from shmopt.checks import integer, number
from shmopt.errors import DataError, ProblemError
from shmopt.problems.base import Problem, option_checks, seeded
from shmopt.problems.packages import fetched, users_path
from shmopt.problems.rdata import data_frame, read_lazyload

__all__ = ["BiasedMF", "movielens_mf", "load_ratings", "MOVIELENS_PROBLEMS"]


class BiasedMF(nn.Module):
    """``mu + b_u + b_i + <p_u, q_i>`` with sparse user and item tables (factors and biases)."""

    def __init__(self, users: int, items: int, dim: int, mu: float) -> None:
        super().__init__()
        self.user = nn.Embedding(users, dim, sparse=True)
        self.item = nn.Embedding(items, dim, sparse=True)
        self.user_bias = nn.Embedding(users, 1, sparse=True)
        self.item_bias = nn.Embedding(items, 1, sparse=True)
        for t in (self.user, self.item):
            nn.init.normal_(t.weight, std=0.1)
        for t in (self.user_bias, self.item_bias):
            nn.init.zeros_(t.weight)
        self.mu = nn.Parameter(torch.tensor([float(mu)]))

    def forward(self, pairs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(predicted ratings, looked-up user rows, looked-up item rows) of ``(user, item)`` pairs."""
        p, q = self.user(pairs[:, 0]), self.item(pairs[:, 1])
        bias = self.user_bias(pairs[:, 0]).squeeze(-1) + self.item_bias(pairs[:, 1]).squeeze(-1)
        return self.mu + bias + (p * q).sum(-1), p, q


def mf_loss(model: nn.Module, batch: tuple[Tensor, ...], l2: float = 0.0) -> Tensor:
    """Mean squared error of the ratings + ``l2`` x mean squared norm of the looked-up rows."""
    pairs, ratings = batch
    pred, p, q = model(pairs)
    loss = ((pred - ratings) ** 2).mean()
    if l2:
        loss = loss + l2 * ((p * p).sum(-1) + (q * q).sum(-1)).mean()
    return loss


def mf_rmse(model: nn.Module, batch: tuple[Tensor, ...]) -> dict[str, float]:
    """Root mean squared error of the predicted ratings."""
    pairs, ratings = batch
    pred = model(pairs)[0]
    return {"rmse": float(((pred - ratings) ** 2).mean().sqrt())}


def _rdb_path(data_dir: str | None, path: str | None) -> Path:
    if path is not None:
        return users_path("movielens-mf", path, "a file (an R lazy-load database, Rdata.rdb, with "
                          "Rdata.rdx next to it)", folder=False)
    return fetched("movielens", data_dir) / "Rdata.rdb"


def load_ratings(rdb: str | Path) -> dict[str, np.ndarray]:
    """The columns of the ``movielens`` data frame in the lazy-load database ``rdb``."""
    try:
        return data_frame(read_lazyload(rdb, "movielens"))
    except DataError as exc:
        raise ProblemError(f"problem 'movielens-mf': cannot read {rdb}: {exc}") from None


def movielens_mf(dim: int = 32, l2: float = 0.05, seed: int = 0, batch_size: int = 256,
                 data_dir: str | None = None, path: str | None = None) -> Problem:
    """The ``movielens-mf`` problem (see the module docstring)."""
    with option_checks("movielens-mf"):
        dim, l2, g = integer("dim", dim, 1), number("l2", l2, ge=0), seeded(seed)
    cols = load_ratings(_rdb_path(data_dir, path))
    users = np.unique(cols["userId"], return_inverse=True)[1]
    items = np.unique(cols["movieId"], return_inverse=True)[1]
    pairs = torch.from_numpy(np.stack([users, items], axis=1).astype(np.int64))
    ratings = torch.from_numpy(np.asarray(cols["rating"], dtype=np.float32))
    order = torch.randperm(len(ratings), generator=g)
    cut = len(ratings) * 9 // 10
    tr, te = order[:cut], order[cut:]
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    mu = float(ratings[tr].mean())
    return Problem(
        name="movielens-mf",
        model=partial(BiasedMF, n_users, n_items, dim, mu),
        loss=partial(mf_loss, l2=l2),
        metrics=mf_rmse,
        train=(pairs[tr].contiguous(), ratings[tr].contiguous()),
        eval=(pairs[te].contiguous(), ratings[te].contiguous()),
        batch_size=batch_size,
        lr={"sgd": 0.05, "amsgrad": 0.01, "adam": 0.01},   # also the tables' (--table-rule adagrad)
        description=f"MovieLens ({len(ratings):,} ratings, {n_users} users, {n_items} movies): biased MF, "
                    f"dim={dim}, l2={l2:g}, 10% held out",
    )


MOVIELENS_PROBLEMS = {"movielens-mf": movielens_mf}
