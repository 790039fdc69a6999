"""Built-in problems: generated data, no download, each built in well under a second.

* :func:`quadratic` - least squares, convex, optimum known exactly.
* :func:`logreg`    - L2-regularised logistic regression, strongly convex, optimum by Newton's method.
* :func:`mlp`       - a small non-convex ReLU classifier, the compute-bound benchmark.

Every generator draws from its own ``torch.Generator`` seeded with ``seed``: the data depend on
the arguments only and the global torch RNG is not touched.  Model factories and losses are
module-level functions (hyper-parameters bound with :func:`functools.partial`) so that they
pickle by reference into worker processes.
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shmopt.checks import integer, number
from shmopt.problems.base import Problem, option_checks, seeded

__all__ = ["quadratic", "logreg", "mlp", "logreg_optimum", "logreg_solve", "SYNTHETIC_PROBLEMS"]


# --------------------------------------------------------------------------- model factories
def linear_model(d_in: int, d_out: int, bias: bool = True) -> nn.Module:
    """``nn.Linear(d_in, d_out, bias)`` (module-level so that partials of it pickle)."""
    return nn.Linear(d_in, d_out, bias=bias)


def mlp_model(d: int, hidden: int, classes: int) -> nn.Module:
    """Linear(d, hidden) -> ReLU -> Linear(hidden, hidden) -> ReLU -> Linear(hidden, classes)."""
    return nn.Sequential(
        nn.Linear(d, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, classes),
    )


# --------------------------------------------------------------------------- losses
def least_squares_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """``0.5 * mean((model(x) - y)^2)`` for a model with one output."""
    x, y = batch
    return 0.5 * (model(x).squeeze(-1) - y).pow(2).mean()


def logreg_loss(model: nn.Module, batch: tuple[Tensor, ...], l2: float) -> Tensor:
    """``mean BCEWithLogits(model(x), y) + (l2/2) * ||model.weight||^2`` (bias not regularised)."""
    x, y = batch
    value = F.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)
    if l2:
        value = value + 0.5 * l2 * model.weight.pow(2).sum()
    return value


def binary_accuracy(model: nn.Module, batch: tuple[Tensor, ...]) -> dict[str, float]:
    """Share of samples whose logit has the sign of the 0/1 label."""
    x, y = batch
    return {"accuracy": float(((model(x).squeeze(-1) > 0).float() == y).float().mean())}


def class_accuracy(model: nn.Module, batch: tuple[Tensor, ...]) -> dict[str, float]:
    """Share of samples whose argmax logit is the int64 label."""
    x, y = batch
    return {"accuracy": float((model(x).argmax(-1) == y).float().mean())}


def cross_entropy_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Mean cross-entropy of ``model(x)`` against int64 class labels ``y``."""
    x, y = batch
    return F.cross_entropy(model(x), y)


# --------------------------------------------------------------------------- quadratic
def quadratic(n: int = 2048, d: int = 32, noise: float = 0.1, seed: int = 0, batch_size: int = 32) -> Problem:
    """Least squares with a linear model without bias.

    Objective ``f(w) = 0.5 * mean_i (x_i . w - y_i)^2`` with ``x_i ~ N(0, I_d)`` and
    ``y = X w* + noise * N(0, 1)``, ``w* ~ N(0, I_d / d)``.  The optimum is computed exactly
    (``torch.linalg.lstsq`` with the SVD driver in float64); it is about
    ``0.5 * noise^2 * (1 - d/n)``.  The Hessian is ``X^T X / n`` (eigenvalues near 1), so the
    problem is well conditioned.
    """
    with option_checks("quadratic"):
        n, d, noise = integer("n", n, 1), integer("d", d, 1), number("noise", noise, ge=0)
        g = seeded(seed)
    X = torch.randn(n, d, generator=g)
    w_star = torch.randn(d, generator=g) / math.sqrt(d)
    y = X @ w_star + noise * torch.randn(n, generator=g)

    X64, y64 = X.double(), y.double()
    # gelsd (SVD): MKL's default gelsy is not bit-reproducible from call to call.
    w_opt = torch.linalg.lstsq(X64, y64.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    optimum = float(0.5 * (X64 @ w_opt - y64).pow(2).mean())
    return Problem(
        name="quadratic",
        model=partial(linear_model, d, 1, bias=False),
        loss=least_squares_loss,
        train=(X.contiguous(), y.contiguous()),
        batch_size=batch_size,
        lr={"sgd": 0.01, "amsgrad": 5e-4, "adam": 5e-4},
        optimum=optimum,
        description=f"least squares 0.5*mean((x.w - y)^2), n={n}, d={d}, noise={noise:g}",
    )


# --------------------------------------------------------------------------- logreg
def logreg_solve(X: Tensor, y: Tensor, l2: float, *, tol: float = 1e-10,
                 max_iter: int = 100) -> tuple[Tensor, Tensor, float]:
    """Minimise the full-batch logreg objective by Newton's method (float64, backtracking).

    Objective: ``f(w, b) = mean BCEWithLogits(X w + b, y) + (l2/2) ||w||^2``, started from zero.
    With ``A = [X, 1]``, ``p = sigmoid(A theta)``: gradient ``A^T (p - y) / n + l2 [w, 0]``,
    Hessian ``A^T diag(p (1 - p)) A / n + l2 diag(1, .., 1, 0)``; each step solves the Newton
    system and halves the step until the Armijo condition holds. Stops when the gradient's
    Euclidean norm is below ``tol`` (about 10 steps for :func:`logreg`'s defaults). Returns
    ``(w, b, value)`` with float64 ``w`` of shape ``(d,)``, scalar ``b`` and the objective value.
    No ``torch.optim`` optimizer is built: constructing one imports torch's compiler stack,
    seconds of start-up for every process that builds this problem.
    """
    A = torch.cat([X.detach().double(), torch.ones(X.shape[0], 1, dtype=torch.float64)], dim=1)
    y64 = y.detach().double().reshape(-1)
    n, m = A.shape
    reg = torch.full((m,), float(l2), dtype=torch.float64)
    reg[-1] = 0.0                                         # the bias is not regularised
    theta = torch.zeros(m, dtype=torch.float64)

    def value(t: Tensor) -> float:
        return float(F.binary_cross_entropy_with_logits(A @ t, y64) + 0.5 * (reg * t * t).sum())

    f = value(theta)
    for _ in range(max_iter):
        p = torch.sigmoid(A @ theta)
        grad = A.T @ (p - y64) / n + reg * theta
        if float(grad.norm()) < tol:
            break
        hess = (A.T * (p * (1 - p))) @ A / n + torch.diag(reg + 1e-12)
        step = torch.linalg.solve(hess, grad)
        t, slope = 1.0, float(grad @ step)
        while (new := value(theta - t * step)) > f - 0.25 * t * slope and t > 1e-12:
            t *= 0.5
        theta, f = theta - t * step, min(new, f)
    return theta[:-1].clone(), theta[-1].clone(), f


def logreg_optimum(X: Tensor, y: Tensor, l2: float) -> float:
    """The minimum of ``mean BCEWithLogits(X w + b, y) + (l2/2) ||w||^2`` (Newton's method, float64)."""
    return logreg_solve(X, y, l2)[2]


def logreg(n: int = 4096, d: int = 32, l2: float = 1e-3, seed: int = 0, batch_size: int = 64) -> Problem:
    """L2-regularised logistic regression on a noisy random teacher.

    Objective ``f(w, b) = mean_i BCEWithLogits(x_i . w + b, y_i) + (l2/2) ||w||^2`` (the bias is
    not regularised), model ``nn.Linear(d, 1)``.  Data: ``x_i ~ N(0, I_d)``, labels
    ``y_i = 1[x_i . w_t + b_t > 0]`` from a random teacher ``(w_t, b_t)`` with 10% of the labels
    flipped, as float32 in {0, 1}.  ``optimum`` is the exact minimum of the full-batch objective
    (:func:`logreg_optimum`).
    """
    with option_checks("logreg"):
        n, d, l2 = integer("n", n, 1), integer("d", d, 1), number("l2", l2, ge=0)
        g = seeded(seed)
    X = torch.randn(n, d, generator=g)
    w_t = torch.randn(d, generator=g)
    w_t = 2.0 * w_t / w_t.norm()
    b_t = 0.5 * torch.randn((), generator=g)
    y = (X @ w_t + b_t > 0).float()
    flip = torch.rand(n, generator=g) < 0.1
    y = torch.where(flip, 1.0 - y, y)
    return Problem(
        name="logreg",
        model=partial(linear_model, d, 1),
        loss=partial(logreg_loss, l2=l2),
        metrics=binary_accuracy,
        train=(X.contiguous(), y.contiguous()),
        batch_size=batch_size,
        lr={"sgd": 0.1, "amsgrad": 5e-3, "adam": 5e-3},
        optimum=logreg_optimum(X, y, l2),
        description=f"logistic regression mean BCE + (l2/2)||w||^2, n={n}, d={d}, l2={l2:g}",
    )


# --------------------------------------------------------------------------- mlp
_TEACHER_WIDTH = 8


def mlp(n: int = 65536, d: int = 64, hidden: int = 256, classes: int = 10, seed: int = 0,
        batch_size: int = 64) -> Problem:
    """A small non-convex classifier (the compute-bound benchmark problem).

    Objective: mean cross-entropy of ``Linear(d, hidden) -> ReLU -> Linear(hidden, hidden) ->
    ReLU -> Linear(hidden, classes)``.  Data: ``x ~ N(0, I_d)``, labels = argmax of the logits
    of a fixed random teacher network (``tanh`` hidden layer of width 8, logits centred per class
    so that no class is tiny).  ``train`` holds ``n`` samples, ``eval`` a held-out split of
    ``max(1, n // 4)`` samples from the same distribution.  ``optimum`` is unknown (``None``).
    The default ``n`` is large enough that the 85k-parameter model does not overfit in the
    first minutes (with 8,192 samples the held-out loss rose after 2 s of training).
    """
    with option_checks("mlp"):
        n, d = integer("n", n, 1), integer("d", d, 1)
        hidden, classes = integer("hidden", hidden, 1), integer("classes", classes, 2)
        g = seeded(seed)
    n_eval = max(1, n // 4)
    t1 = torch.randn(d, _TEACHER_WIDTH, generator=g) / math.sqrt(d)
    t2 = torch.randn(_TEACHER_WIDTH, classes, generator=g)
    X = torch.randn(n + n_eval, d, generator=g)
    logits = torch.tanh(X @ t1) @ t2
    logits = logits - logits[:n].mean(dim=0)
    y = logits.argmax(dim=1)
    return Problem(
        name="mlp",
        model=partial(mlp_model, d, hidden, classes),
        loss=cross_entropy_loss,
        metrics=class_accuracy,
        train=(X[:n].contiguous(), y[:n].contiguous()),
        eval=(X[n:].contiguous(), y[n:].contiguous()),
        batch_size=batch_size,
        lr={"sgd": 0.05, "amsgrad": 1e-3, "adam": 1e-3},
        optimum=None,
        description=f"ReLU MLP {d}-{hidden}-{hidden}-{classes}, cross-entropy on teacher labels, n={n}",
    )


#: Built-in problem builders by name.
SYNTHETIC_PROBLEMS = {"logreg": logreg, "mlp": mlp, "quadratic": quadratic}
