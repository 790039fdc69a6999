"""The peers of bench/test_spam_logreg.py: full-batch L-BFGS (the optimum F* itself, timed as a
solver) and scikit-learn's LogisticRegression on the same hashed features (a check of accuracy).

* :func:`lbfgs_run`: ``torch.optim.LBFGS`` (strong Wolfe) on the training set as a CSR matrix, the
  solver of shmopt/problems/spam_optimum.py, with every evaluation of ``F`` stamped with its time:
  its objective gap against wall time, the time it needs to reach a gap, and the samples it reads
  per second (N messages per function-and-gradient evaluation).
* :func:`sklearn_run`: ``LogisticRegression(C = 1 / (N l2), solver="lbfgs")`` on a scipy CSR copy
  of the same features (sklearn minimises ``C sum_i loss_i + ||w||^2 / 2``, the same objective
  times ``N C``, the intercept unpenalised): its fit time, held-out accuracy and its objective
  gap. Skipped, saying so, when scikit-learn is not installed (the ``peers`` extra has it).
"""
from __future__ import annotations

import time

import torch

from shmopt.problems.spam_optimum import objective, to_csr, transpose, value_and_grad

__all__ = ["lbfgs_run", "sklearn_run", "has_sklearn"]


def _training(problem) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    idx, val, _, y = problem.train
    features = problem.model.args[0]
    return idx, val, y, features


def lbfgs_run(problem, optimum: float, max_s: float, threads: int = 1) -> dict:
    """Run L-BFGS from 0 for at most ``max_s`` seconds (``threads`` torch threads); the gap after
    each evaluation with its time since the start (the CSR matrices built before the clock)."""
    idx, val, y, features = _training(problem)
    l2 = problem.loss.keywords["l2"]
    X = to_csr(idx, val, features)
    XT, yy = transpose(X), y.double().unsqueeze(1)
    w = torch.zeros(features, 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=10_000, history_size=20, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")
    trace: list[tuple[float, float]] = []
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()

    def closure() -> torch.Tensor:
        value = value_and_grad(X, XT, yy, w, b, l2)
        trace.append((time.perf_counter() - t0, float(value) - optimum))
        if trace[-1][0] > max_s:
            raise TimeoutError
        return value

    try:
        opt.step(closure)
    except TimeoutError:
        pass
    finally:
        torch.set_num_threads(old)
    elapsed = trace[-1][0]
    return {"trace": trace, "evaluations": len(trace), "seconds": elapsed, "final_gap": trace[-1][1],
            "samples_per_s": len(trace) * len(y) / elapsed, "threads": threads}


def time_to(trace: list[tuple[float, float]], target: float) -> float | None:
    """The first time in ``trace`` ((t, gap) pairs) at which the gap is at most ``target``."""
    return next((t for t, gap in trace if gap <= target), None)


def has_sklearn() -> bool:
    try:
        import scipy.sparse  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def sklearn_run(problem, optimum: float) -> dict:
    """scikit-learn's L2 logistic regression on the same features: fit time, held-out accuracy,
    objective gap of its solution."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    idx, val, y, features = _training(problem)
    l2 = problem.loss.keywords["l2"]

    def csr(i: torch.Tensor, v: torch.Tensor):
        rows = np.repeat(np.arange(len(i)), i.shape[1])
        return sp.csr_matrix((v.double().numpy().ravel(), (rows, i.numpy().ravel())), shape=(len(i), features))

    X, Xe = csr(idx, val), csr(problem.eval[0], problem.eval[1])
    clf = LogisticRegression(C=1.0 / (len(y) * l2), solver="lbfgs", max_iter=5000, tol=1e-8)
    t0 = time.perf_counter()
    clf.fit(X, y.numpy())
    seconds = time.perf_counter() - t0
    w = torch.from_numpy(clf.coef_.ravel()).double()
    z = torch.from_numpy(X @ clf.coef_.ravel() + clf.intercept_[0])
    gap = float(objective(z, y.double(), w, l2)) - optimum
    accuracy = float((clf.predict(Xe) == problem.eval[3].numpy()).mean())
    return {"seconds": seconds, "accuracy": accuracy, "final_gap": gap, "iterations": int(clf.n_iter_[0])}
