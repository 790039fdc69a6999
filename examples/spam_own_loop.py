"""Sparse logistic regression on SpamAssassin in your own training loop, with shmopt's shared optimizers.

The ``spam-logreg`` problem (docs/spam-logreg.md) gives the data (hashed bags of words) and the
loss; the loop is yours: ``torch.multiprocessing`` learners, one model in shared memory
(``shmopt.share``), ``SharedRowwiseAdagrad`` on the hashed-word table (one accumulator per row,
PyTorch-BigGraph's rule) and ``SharedSGD`` on the bias. Every learner computes on the shared
model itself, lock-free (Hogwild): it never holds a copy of the table, and a step costs the rows
its mini-batch touches. The parent prints the held-out accuracy and the gap to the L-BFGS optimum.

    shmopt data fetch spam-assassin
    python examples/spam_own_loop.py --processes 2 --steps 300
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.multiprocessing as mp

from shmopt.problems import load_problem
from shmopt.problems.spam_logreg import HashedLogReg, spam_loss
from shmopt.shared import SharedRowwiseAdagrad, SharedSGD, share


def learner(rank: int, shared, table_opt, bias_opt, train: tuple, l2: float, steps: int,
            batch: int, seed: int) -> None:
    """``steps`` Hogwild steps on uniformly drawn mini-batches of ``train``."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed + rank)
    n = len(train[-1])
    for _ in range(steps):
        rows = torch.randint(n, (batch,), generator=g)
        loss = spam_loss(shared.module, tuple(t[rows] for t in train), l2=l2)
        table_opt.zero_grad()
        bias_opt.zero_grad()
        loss.backward()                           # sparse gradient of the touched rows only
        table_opt.step()
        bias_opt.step()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300, help="mini-batches per learner")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.5, help="the table's row-wise Adagrad rate")
    ap.add_argument("--n", type=int, default=0, help="messages to use (0: all)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    problem = load_problem("spam-logreg", n=args.n, batch_size=args.batch, data_dir=args.data_dir)
    l2 = problem.loss.keywords["l2"]
    features = problem.model.args[0]
    t0 = time.time()
    with share(HashedLogReg(features)) as shared, \
            SharedRowwiseAdagrad([shared.bag.weight], lr=args.lr) as table_opt, \
            SharedSGD([shared.bias], lr=args.lr) as bias_opt:
        before = problem.metrics(shared.module, problem.eval)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=learner, args=(r, shared, table_opt, bias_opt, problem.train, l2,
                                                   args.steps, args.batch, args.seed))
                 for r in range(args.processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        with torch.no_grad():
            after = problem.metrics(shared.module, problem.eval)
        print(f"{args.processes} learners x {args.steps} steps, {table_opt.step_count} table updates, "
              f"{time.time() - t0:.1f} s")
        print(f"held-out accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
              f"objective gap {before['objective_gap']:.4f} -> {after['objective_gap']:.4f}")
        ok = all(p.exitcode == 0 for p in procs)
        return 0 if ok and after["objective_gap"] < before["objective_gap"] else 1


if __name__ == "__main__":
    sys.exit(main())
