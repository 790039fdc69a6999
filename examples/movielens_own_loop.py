"""Your own Hogwild training loop on MovieLens with shmopt's shared optimizers (no Engine).

The ratings, the 90/10 split, the model (``BiasedMF``: ``r_hat = mu + b_u + b_i + <p_u, q_i>``,
four ``nn.Embedding(sparse=True)`` tables and a dense ``mu``) and the loss (squared error + l2 x
the squared norm of the looked-up rows) are the ``movielens-mf`` problem's. The loop is the one a
PyTorch user writes: ``torch.multiprocessing`` (spawn), ``share(model)`` puts the parameters in
shared memory, and every process computes on the shared model itself (so it holds nothing of the
tables' size), then steps two shared optimizers without a lock:

* the tables: ``SharedAdagrad`` (element-wise, as ``--table-rule adagrad``) or
  ``SharedRowwiseAdagrad`` (one accumulator per row, PyTorch-BigGraph's); each step updates only
  the rows of its batch;
* ``mu``: ``SharedAdagrad`` (dense).

Run (after ``shmopt data fetch movielens``)::

    python examples/movielens_own_loop.py --processes 2 --steps 1500

It prints the held-out RMSE before and after (0.89 with these settings, as the engine's
``shmopt run movielens-mf --data-dir DIR --algo hogwild -w 2 --steps 3000 --table-rule adagrad``).
``--path FILE`` reads your own ``Rdata.rdb`` instead of the fetched package.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.multiprocessing as mp

from shmopt import SharedAdagrad, SharedRowwiseAdagrad, share
from shmopt.errors import ProblemError
from shmopt.problems import load_problem
from shmopt.problems.movielens import mf_loss, mf_rmse

TABLE_OPTIMIZERS = {"adagrad": SharedAdagrad, "rowwise-adagrad": SharedRowwiseAdagrad}


def learner(rank: int, shared, tables, dense, train, steps: int, batch: int, l2: float, seed: int) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed + rank)
    pairs, ratings = train
    for _ in range(steps):
        idx = torch.randint(len(ratings), (batch,), generator=g)
        tables.zero_grad()
        dense.zero_grad()
        mf_loss(shared, (pairs[idx], ratings[idx]), l2).backward()   # sparse grads on the tables
        tables.step()                                                 # the batch's rows only
        dense.step()


def held_out_rmse(model, data) -> float:
    with torch.no_grad():
        return mf_rmse(model, data)["rmse"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1500, help="updates per process")
    ap.add_argument("--optimizer", choices=sorted(TABLE_OPTIMIZERS), default="adagrad",
                    help="the tables' shared optimizer")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--l2", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--data-dir", default=None, help="where `shmopt data fetch movielens` put the data")
    ap.add_argument("--path", default=None, help="your own Rdata.rdb instead")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        problem = load_problem("movielens-mf", data_dir=args.data_dir, path=args.path, seed=args.seed)
    except ProblemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    train = tuple(t.share_memory_() for t in problem.train)
    ctx = mp.get_context("spawn")
    with share(problem.model()) as shared, \
            TABLE_OPTIMIZERS[args.optimizer]([p for n, p in shared.named_parameters() if n != "mu"],
                                             lr=args.lr) as tables, \
            SharedAdagrad([shared.mu], lr=args.lr) as dense:
        before = held_out_rmse(shared, problem.eval)
        t0 = time.perf_counter()
        procs = [ctx.Process(target=learner, args=(r, shared, tables, dense, train, args.steps, args.batch,
                                                   args.l2, args.seed)) for r in range(args.processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        seconds = time.perf_counter() - t0
        after = held_out_rmse(shared, problem.eval)
        print(f"{problem.description}")
        print(f"{args.processes} processes x {args.steps} steps ({tables.step_count} updates of the "
              f"{args.optimizer} tables) in {seconds:.1f} s")
        print(f"held-out RMSE: {before:.4f} -> {after:.4f}")
        ok = all(p.exitcode == 0 for p in procs) and tables.step_count == args.processes * args.steps
    return 0 if ok and after < before else 1


if __name__ == "__main__":
    sys.exit(main())
