"""``spam-logreg``: sparse L2-regularised logistic regression on the SpamAssassin public corpus.

The offline stand-in for APAM's convex experiment (sparse logistic regression on rcv1; Xu et al.,
arXiv 2002.09095). Data: 6,046 messages (1,896 spam) from ``shmopt data fetch spam-assassin``
or a folder of your own (``-o path=...``), read and hashed into ``features`` buckets as
:mod:`.spam_data` says; a seeded permutation keeps 80% for training and 20% held out (``n``: a
seeded subset of ``n`` messages first).

Model: ``z = w . x + b``, ``w`` an ``nn.EmbeddingBag(features, 1, mode="sum", sparse=True)`` table
(started at 0) summing the message's buckets with their values as ``per_sample_weights``, ``b`` a
dense bias. Objective (what every algorithm minimises, and ``F*`` is the optimum of):

    F(w, b) = (1/N) sum_i log(1 + exp(-s_i z_i)) + (l2/2) ||w||^2,   s_i = 2 y_i - 1.

A mini-batch's loss is its mean logistic loss plus ``(l2/2) (1/B) sum_i sum_{j in x_i} w_j^2 / p_j``
with ``p_j`` the share of training messages that hold bucket ``j``: the penalty touches only the
batch's rows and its expectation over a uniformly drawn message is exactly ``(l2/2) ||w||^2``
(a bucket no training message holds stays 0). The evaluator's ``loss`` is this on the held-out
messages (their buckets weighted by the training ``p_j``).

Metrics: ``accuracy``, the share of held-out messages with ``z > 0`` exactly when spam, and
``objective_gap``, ``F(w, b) - F*`` on the whole training set in float64 (a sparse product
over its ~1M entries at every evaluation: tens of ms of one thread), ``F*`` from full-batch L-BFGS
(:mod:`.spam_optimum`, solved once and cached).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shmopt.checks import choice, integer, number
from shmopt.errors import ProblemError
from shmopt.problems.base import Problem, option_checks, seeded
from shmopt.problems.packages import fetched, users_path
from shmopt.problems.spam_data import WEIGHTS, hashed_bags, list_messages, read_texts
from shmopt.problems.spam_optimum import cached_optimum, objective

__all__ = ["HashedLogReg", "spam_logreg", "spam_loss", "spam_metrics", "SPAM_PROBLEMS"]


class HashedLogReg(nn.Module):
    """``w . x + b``: ``w`` a sparse ``EmbeddingBag(features, 1)`` table, ``b`` a dense bias."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(features, 1, mode="sum", sparse=True)
        nn.init.zeros_(self.bag.weight)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, idx: Tensor, val: Tensor) -> Tensor:
        return self.bag(idx, per_sample_weights=val).squeeze(-1) + self.bias


def spam_loss(model: nn.Module, batch: tuple[Tensor, ...], l2: float = 0.0) -> Tensor:
    """Mean logistic loss + the batch's unbiased share of ``(l2/2) ||w||^2`` (module docstring)."""
    idx, val, inv_p, y = batch
    loss = F.binary_cross_entropy_with_logits(model(idx, val), y)
    if l2:
        rows = F.embedding(idx, model.bag.weight, sparse=True).squeeze(-1)
        loss = loss + 0.5 * l2 * (inv_p * rows * rows).sum(1).mean()
    return loss


def spam_metrics(model: nn.Module, batch: tuple[Tensor, ...], train: tuple[Tensor, ...] = (),
                 l2: float = 0.0, optimum: float = 0.0) -> dict[str, float]:
    """Held-out ``accuracy`` of ``batch``; ``objective_gap`` ``F - F*`` on ``train``, the training
    set as (message of each entry, bucket, value, labels), padding left out."""
    idx, val, _, y = batch
    accuracy = float(((model(idx, val) > 0).float() == y).float().mean())
    rows, cols, vals, labels = train
    w, b = model.bag.weight.detach().double().squeeze(1), float(model.bias.detach())
    z = torch.zeros(len(labels), dtype=torch.float64).index_add_(0, rows, w[cols] * vals) + b
    return {"accuracy": accuracy, "objective_gap": float(objective(z, labels, w, l2)) - optimum}


def _folder(data_dir: str | None, path: str | None) -> Path:
    if path is not None:
        return users_path("spam-logreg", path, "a folder (of spam-*/ and ham folders of .txt messages)",
                          folder=True)
    return fetched("spam-assassin", data_dir)


def _entries(idx: Tensor, val: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(message, bucket, value) of every non-padding entry, values in float64."""
    keep = val != 0
    rows = torch.arange(len(idx)).unsqueeze(1).expand_as(idx)[keep]
    return rows.contiguous(), idx[keep].contiguous(), val[keep].double()


def spam_logreg(features: int = 2**18, l2: float = 1e-4, seed: int = 0, batch_size: int = 64,
                weights: str = "log", max_tokens: int = 512, n: int = 0, data_dir: str | None = None,
                path: str | None = None) -> Problem:
    """The ``spam-logreg`` problem (see the module docstring); ``n=0``: every message."""
    with option_checks("spam-logreg"):
        features, l2 = integer("features", features, 2, 2**31), number("l2", l2, gt=0)
        weights, max_tokens = choice("weights", weights, WEIGHTS), integer("max_tokens", max_tokens, 1)
        n, g = integer("n", n, 0), seeded(seed)
    folder = _folder(data_dir, path)
    names, labels = list_messages(folder)
    order = torch.randperm(len(names), generator=g)
    if n:
        if n < 10:
            raise ProblemError("problem 'spam-logreg': invalid n=%d: must be 0 (all) or >= 10" % n)
        order = order[:n]
    texts = read_texts(folder, [names[i] for i in order.tolist()])      # only the messages used
    idx, val = hashed_bags(texts, features, weights, max_tokens)
    y = torch.tensor(labels, dtype=torch.float32)[order]
    cut = len(y) * 4 // 5
    entries = _entries(idx[:cut], val[:cut])
    counts = torch.bincount(entries[1], minlength=features).float()
    inv_p = torch.where(counts > 0, cut / counts.clamp(min=1), torch.zeros(()))
    inv = torch.where(val != 0, inv_p[idx], torch.zeros(()))
    parts = [(t[:cut].contiguous(), t[cut:].contiguous()) for t in (idx, val, inv, y)]
    train, held = tuple(p[0] for p in parts), tuple(p[1] for p in parts)
    optimum = cached_optimum(train[0], train[1], train[3], features, l2, folder)
    return Problem(
        name="spam-logreg",
        model=partial(HashedLogReg, features),
        loss=partial(spam_loss, l2=l2),
        metrics=partial(spam_metrics, train=(*entries, train[3].double()), l2=l2, optimum=optimum),
        train=train, eval=held, batch_size=batch_size,
        lr={"sgd": 2.0, "amsgrad": 0.01, "adam": 0.01, "adagrad": 0.5},
        description=f"SpamAssassin ({len(y):,} messages, {int(y.sum()):,} spam): logistic regression on "
                    f"{features:,} hashed buckets ({weights}), l2={l2:g}, 20% held out, F*={optimum:.6f}",
    )


SPAM_PROBLEMS = {"spam-logreg": spam_logreg}
