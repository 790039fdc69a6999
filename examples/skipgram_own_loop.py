"""Word vectors in your own Hogwild loop: skip-gram with negative sampling on shmopt's shared
optimizers, without the engine.

The data and the loss come from the built-in ``skipgram`` problem (the corpus read into
``(centre, context)`` pairs, the SGNS loss with its unigram^0.75 negatives, the word tests); the
loop is yours: ``share()`` puts both word tables in shared memory, ``SharedSGD`` (or
``SharedRowwiseAdagrad``) updates the rows a batch touched, and ``--processes`` torch
processes run forward, backward and step on the shared model itself, lock-free, each on its
own slice of the pairs, as word2vec's threads do. The parent then scores the vectors with the
problem's metrics (WordSim-353 Spearman, SimLex-999 Spearman, analogy accuracy).

Run, after ``shmopt data fetch janeausten`` and ``shmopt data fetch word-tests``::

    python examples/skipgram_own_loop.py --processes 2 --steps 2000
    python examples/skipgram_own_loop.py --corpus brown --rule rowwise-adagrad --lr 0.1
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.multiprocessing as mp

from shmopt import SharedRowwiseAdagrad, SharedSGD, share
from shmopt.errors import ProblemError
from shmopt.problems import load_problem


def learner(rank: int, processes: int, shared, opt, loss, pairs: torch.Tensor, batch: int,
            steps: int) -> None:
    """Hogwild learner: its own slice of the pairs, in a seeded random order."""
    torch.set_num_threads(1)
    torch.manual_seed(rank)                       # this learner's negatives
    mine = pairs[rank::processes]
    order = torch.randperm(len(mine))
    for s in range(steps):
        start = (s * batch) % max(1, len(mine) - batch + 1)
        opt.zero_grad()
        loss(shared, (mine[order[start:start + batch]],)).backward()
        opt.step()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="janeausten", choices=["janeausten", "brown"])
    ap.add_argument("--data-dir", default=None, help="where `shmopt data fetch` put the packages")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2000, help="steps per process")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--rule", default="sgd", choices=["sgd", "rowwise-adagrad"])
    ap.add_argument("--lr", type=float, default=None, help="default: the problem's (sgd), 0.1 (adagrad)")
    args = ap.parse_args(argv)
    try:
        problem = load_problem("skipgram", corpus=args.corpus, data_dir=args.data_dir, dim=args.dim,
                               batch_size=args.batch_size)
    except ProblemError as exc:
        print(f"skipgram_own_loop: {exc}", file=sys.stderr)
        return 2
    print(problem.description)
    torch.manual_seed(0)
    shared = share(problem.model())
    if args.rule == "sgd":
        opt = SharedSGD(shared.parameters(), lr=args.lr or problem.lr["sgd"])
    else:
        opt = SharedRowwiseAdagrad(shared.parameters(), lr=args.lr or 0.1)
    ctx = mp.get_context("spawn")
    (pairs,) = problem.train
    t0 = time.time()
    procs = [ctx.Process(target=learner, args=(r, args.processes, shared, opt, problem.loss, pairs,
                                               args.batch_size, args.steps)) for r in range(args.processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    seconds = time.time() - t0
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    done = args.processes * args.steps * args.batch_size
    print(f"{done:,} pairs ({done / len(pairs):.2f} epochs) by {args.processes} processes in {seconds:.1f} s"
          f"{f'; learners failed: {failed}' if failed else ''}")
    shared.eval()
    with torch.no_grad():
        metrics = problem.metrics(shared.module, problem.eval)
        print(f"eval loss {float(problem.loss(shared.module, problem.eval)):.4f}; " +
              ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    opt.close()
    shared.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
