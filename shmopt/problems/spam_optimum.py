"""The optimum ``F*`` of L2-regularised logistic regression on hashed bags, by full-batch L-BFGS.

``F(w, b) = (1/N) sum_i log(1 + exp(-s_i (w . x_i + b))) + (l2/2) ||w||^2`` with ``s_i = 2 y_i - 1``
(the bias is not regularised). The training bags become one ``N x features`` sparse matrix (torch
CSR, float64) and ``torch.optim.LBFGS`` with the strong Wolfe line search minimises ``F`` from
zero until the gradient's largest entry is below ``tol`` (F is strictly convex for ``l2 > 0``).
Solved once per data and options: the result is kept in memory and, when a folder is given, in a
small JSON file there named after a digest of the training tensors and ``l2``
(``.spam-logreg-optimum-<digest>.json``), so a second process or run reads it instead.
"""
from __future__ import annotations

import json
import warnings
from hashlib import blake2b
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["objective", "value_and_grad", "lbfgs_optimum", "cached_optimum", "to_csr", "transpose"]

_MEMORY: dict[str, float] = {}


def to_csr(idx: Tensor, val: Tensor, features: int) -> Tensor:
    """The ``N x features`` float64 CSR matrix of padded bags (padding entries are 0: they vanish)."""
    n, width = idx.shape
    rows = torch.arange(n).repeat_interleave(width)
    coo = torch.sparse_coo_tensor(torch.stack([rows, idx.reshape(-1)]), val.reshape(-1).double(),
                                  (n, features), check_invariants=True).coalesce()
    with warnings.catch_warnings():          # torch: "Sparse CSR tensor support is in beta state"
        warnings.filterwarnings("ignore", "Sparse CSR", UserWarning)
        return coo.to_sparse_csr()


def transpose(X: Tensor) -> Tensor:
    """``X^T`` as a CSR matrix of its own (products with it are then as fast as with ``X``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR", UserWarning)
        return X.t().to_sparse_csr()


def objective(scores: Tensor, y: Tensor, w: Tensor, l2: float) -> Tensor:
    """``F``: mean logistic loss of the scores ``w . x_i + b`` plus ``(l2/2) ||w||^2``."""
    return F.binary_cross_entropy_with_logits(scores, y.to(scores.dtype)) + 0.5 * l2 * w.pow(2).sum()


def value_and_grad(X: Tensor, XT: Tensor, y: Tensor, w: Tensor, b: Tensor, l2: float) -> Tensor:
    """``F(w, b)``, with ``w.grad = X^T (sigmoid(z) - y) / N + l2 w`` and ``b.grad`` its bias part
    set by hand (an L-BFGS closure's body; ``y`` as an ``N x 1`` float64 column)."""
    with torch.no_grad():
        z = X @ w + b
        value = objective(z, y, w, l2)
        r = (torch.sigmoid(z) - y) / len(y)
        w.grad = XT @ r + l2 * w
        b.grad = r.sum().reshape(1)
    return value


def lbfgs_optimum(X: Tensor, y: Tensor, l2: float, tol: float = 1e-8,
                  max_rounds: int = 20) -> tuple[float, Tensor, float]:
    """(F*, w*, b*) for the CSR matrix ``X`` (float64) and 0/1 labels ``y``. The gradient is
    written by hand (``X^T (sigmoid(z) - y) / N + l2 w``, with ``X^T`` kept as a second CSR
    matrix): autograd through a CSR product is ten times slower."""
    XT, y = transpose(X), y.double().unsqueeze(1)
    w = torch.zeros(X.shape[1], 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, history_size=20, tolerance_grad=tol,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        return value_and_grad(X, XT, y, w, b, l2)

    last = float("inf")
    for _ in range(max_rounds):       # LBFGS.step stops after max_iter; go on until converged
        value = float(opt.step(closure))
        if float(torch.cat([w.grad.reshape(-1), b.grad]).abs().max()) <= tol or value >= last:
            break                     # converged, or no progress left at float64 precision
        last = value
    with torch.no_grad():
        best = float(objective(X @ w + b, y, w, l2))
    return best, w.detach().squeeze(1), float(b.detach())


def _digest(idx: Tensor, val: Tensor, y: Tensor, features: int, l2: float) -> str:
    h = blake2b(digest_size=12)
    for t in (idx, val, y):
        h.update(t.contiguous().numpy().tobytes())
    h.update(f"{features}:{l2!r}".encode())
    return h.hexdigest()


def cached_optimum(idx: Tensor, val: Tensor, y: Tensor, features: int, l2: float,
                   folder: Path | None = None) -> float:
    """``F*`` of the training bags, solved once (see the module docstring for the cache)."""
    key = _digest(idx, val, y, features, l2)
    if key in _MEMORY:
        return _MEMORY[key]
    path = folder / f".spam-logreg-optimum-{key}.json" if folder is not None else None
    if path is not None and path.is_file():
        try:
            _MEMORY[key] = float(json.loads(path.read_text())["optimum"])
            return _MEMORY[key]
        except (ValueError, KeyError, TypeError, OSError):
            pass                                    # a damaged cache file: solve again
    _MEMORY[key] = lbfgs_optimum(to_csr(idx, val, features), y, l2)[0]
    if path is not None:
        try:
            path.write_text(json.dumps({"optimum": _MEMORY[key], "l2": l2, "features": features}))
        except OSError:
            pass                                    # a read-only data folder: memory only
    return _MEMORY[key]
