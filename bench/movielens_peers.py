"""The peers of bench/test_movielens.py: what a MovieLens user runs without shmopt, on the SAME
ratings and the SAME 90/10 split (the train/eval tensors of ``load_problem("movielens-mf")``).

* :func:`surprise_svd`: scikit-surprise's ``SVD`` (Funk's biased MF trained by per-rating SGD in
  Cython, Koren et al. 2009 eq. 5; Hug, JOSS 2020), its defaults (100 factors, 20 epochs, lr 0.005,
  reg 0.02). Its trainset is built from the training ratings as they are (no re-split, no
  re-read), it predicts each held-out rating with its own ``predict`` (unknown users/items fall back
  to the biases, predictions clipped to the 0.5 - 5 scale, as its users get them); RMSE over them.
  Surprise has no history: only its final RMSE and its fit time.
* :func:`torch_sparse_adam`: one process, the problem's own ``BiasedMF`` and loss, the four
  tables trained by ``torch.optim.SparseAdam`` and ``mu`` by ``torch.optim.Adam`` (PyTorch's
  recipe for ``nn.Embedding(sparse=True)``), mini-batches drawn with replacement like shmopt's
  workers; held-out RMSE every ``eval_every`` seconds of TRAINING time (evaluation excluded).

scikit-surprise is an optional peer (``pip install -e .[peers]``): :func:`have_surprise` says
whether it imports, and the bench skips its cases with that reason when it does not.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from shmopt.problems.base import Problem
from shmopt.problems.movielens import mf_rmse

RATING_SCALE = (0.5, 5.0)


def have_surprise() -> str | None:
    """None when scikit-surprise imports, else the reason it does not."""
    try:
        import surprise  # noqa: F401
    except Exception as exc:            # ImportError, or a binary built for another numpy
        return f"scikit-surprise is not installed or does not import ({exc}): pip install -e '.[peers]'"
    return None


def _trainset(pairs: Tensor, ratings: Tensor):
    """A ``surprise.Trainset`` of these (user, item) pairs and ratings, raw ids = our ids."""
    from surprise import Trainset

    users, items = pairs[:, 0].tolist(), pairs[:, 1].tolist()
    uid = {u: k for k, u in enumerate(dict.fromkeys(users))}
    iid = {i: k for k, i in enumerate(dict.fromkeys(items))}
    ur: dict[int, list] = {k: [] for k in uid.values()}
    ir: dict[int, list] = {k: [] for k in iid.values()}
    for u, i, r in zip(users, items, ratings.tolist()):
        ur[uid[u]].append((iid[i], r))
        ir[iid[i]].append((uid[u], r))
    return Trainset(ur, ir, len(uid), len(iid), len(users), RATING_SCALE, uid, iid)


def surprise_svd(problem: Problem, seed: int = 0, **options) -> dict:
    """Fit surprise's SVD on ``problem.train``; {rmse, fit_s, build_s, ratings_per_s, epochs}."""
    from surprise import SVD

    t0 = time.perf_counter()
    trainset = _trainset(*problem.train)
    t1 = time.perf_counter()
    algo = SVD(random_state=seed, **options)
    algo.fit(trainset)
    t2 = time.perf_counter()
    pairs, ratings = problem.eval
    pred = np.array([algo.predict(u, i, clip=True).est for u, i in pairs.tolist()])
    rmse = float(np.sqrt(np.mean((pred - ratings.numpy()) ** 2)))
    fit = t2 - t1
    return {"rmse": rmse, "fit_s": fit, "build_s": t1 - t0, "epochs": algo.n_epochs,
            "ratings_per_s": algo.n_epochs * trainset.n_ratings / fit, "factors": algo.n_factors}


def _held_out_rmse(model: torch.nn.Module, data: tuple[Tensor, ...]) -> float:
    with torch.no_grad():
        return mf_rmse(model, data)["rmse"]


def torch_sparse_adam(problem: Problem, seconds: float, lr: float = 0.01, eval_every: float = 0.5,
                      seed: int = 0, threads: int = 1) -> dict:
    """Train ``problem``'s model for ``seconds`` of training time in this process; the history
    [(training seconds, updates, held-out rmse)], samples/s, the final rmse."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = problem.model()
        tables = [p for n, p in model.named_parameters() if n != "mu"]
        sparse = torch.optim.SparseAdam(tables, lr=lr)
        dense = torch.optim.Adam([model.mu], lr=lr)
        x, y = problem.train
        g = torch.Generator().manual_seed(seed)
        history = [(0.0, 0, _held_out_rmse(model, problem.eval))]
        trained, updates, next_eval = 0.0, 0, eval_every
        while trained < seconds:
            t = time.perf_counter()
            idx = torch.randint(len(y), (problem.batch_size,), generator=g)
            sparse.zero_grad()
            dense.zero_grad()
            problem.loss(model, (x[idx], y[idx])).backward()
            sparse.step()
            dense.step()
            trained += time.perf_counter() - t
            updates += 1
            if trained >= next_eval:
                history.append((trained, updates, _held_out_rmse(model, problem.eval)))
                next_eval += eval_every
        history.append((trained, updates, _held_out_rmse(model, problem.eval)))
        return {"history": history, "updates": updates, "train_s": trained,
                "samples_per_s": updates * problem.batch_size / trained, "rmse": history[-1][2]}
    finally:
        torch.set_num_threads(saved)
