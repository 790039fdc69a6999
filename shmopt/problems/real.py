"""Built-in problems on real data that ships inside a package (nothing is downloaded at run time).

* ``breast-cancer``: the Wisconsin diagnostic set (569 x 30, binary; scikit-learn's wheel), the
  features standardised; L2-regularised logistic regression, the convex stand-in for the APAM
  paper's text sets, with its exact optimum (Newton's method, as ``logreg``).
* ``digits``: 1797 handwritten 8x8 digits, 10 classes (scikit-learn's wheel), pixels scaled to
  [0, 1]; a ReLU MLP on a fixed, seeded 75/25 train/test split, evaluated on the test part.

Both report ``accuracy``. scikit-learn is an optional dependency (``pip install 'shmopt[data]'``):
without it these problems say so in one line.
"""
from __future__ import annotations

from functools import partial

import torch

from ..checks import integer, number
from ..errors import ProblemError
from .base import Problem, option_checks, seeded
from .builtin import (
    binary_accuracy,
    class_accuracy,
    cross_entropy_loss,
    linear_model,
    logreg_loss,
    logreg_optimum,
    mlp_model,
)


def _sklearn_datasets(problem: str):
    try:
        import sklearn.datasets as ds
    except ImportError:
        raise ProblemError(f"problem {problem!r} needs scikit-learn, whose wheel ships the data: "
                           f"pip install 'shmopt[data]' (or scikit-learn)") from None
    return ds


def breast_cancer(l2: float = 1e-3, batch_size: int = 32) -> Problem:
    """Logistic regression ``mean BCEWithLogits(x . w + b, y) + (l2/2)||w||^2`` on the 569
    standardised samples (eval on all of them, where ``optimum`` is the exact minimum)."""
    with option_checks("breast-cancer"):
        l2 = number("l2", l2, ge=0)
    X, y = _sklearn_datasets("breast-cancer").load_breast_cancer(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float64)
    X = ((X - X.mean(0)) / X.std(0)).float().contiguous()
    y = torch.tensor(y, dtype=torch.float32)
    return Problem(name="breast-cancer", model=partial(linear_model, X.shape[1], 1),
                   loss=partial(logreg_loss, l2=l2), metrics=binary_accuracy, train=(X, y),
                   batch_size=batch_size, lr={"sgd": 0.1, "amsgrad": 0.005, "adam": 0.005},
                   optimum=logreg_optimum(X, y, l2),
                   description=f"breast cancer (569 x 30): logistic regression, l2={l2:g}")


def digits(hidden: int = 64, seed: int = 0, batch_size: int = 32) -> Problem:
    """A ReLU MLP 64-hidden-hidden-10 on 8x8 digits; train on a seeded 75%, evaluate on 25%."""
    with option_checks("digits"):
        hidden, g = integer("hidden", hidden, 1), seeded(seed)
    X, y = _sklearn_datasets("digits").load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32) / 16.0
    y = torch.tensor(y, dtype=torch.int64)
    order = torch.randperm(len(y), generator=g)
    cut = len(y) * 3 // 4
    tr, te = order[:cut], order[cut:]
    return Problem(name="digits", model=partial(mlp_model, 64, hidden, 10), loss=cross_entropy_loss,
                   metrics=class_accuracy, train=(X[tr].contiguous(), y[tr].contiguous()),
                   eval=(X[te].contiguous(), y[te].contiguous()), batch_size=batch_size,
                   lr={"sgd": 0.1, "amsgrad": 0.003, "adam": 0.003},
                   description=f"8x8 digits (1797, 10 classes): MLP 64-{hidden}-{hidden}-10, 25% held out")


REAL_PROBLEMS = {"breast-cancer": breast_cancer, "digits": digits}
