"""WordNet knowledge-graph embeddings trained by your own processes, with shmopt's shared
optimizers (docs/knowledge-graphs.md).

The ``wordnet-kg`` problem gives the data (training triples, held-out triples), the model
(DistMult by default: an ``nn.Embedding(sparse=True)`` entity table and dense relations), the
negative-sampling loss and the filtered MRR. This script trains it the PyTorch-BigGraph way,
without the engine: ``share(model)`` puts the parameters in shared memory, a
``SharedRowwiseAdagrad`` (one accumulator per entity row, in shared memory) updates the rows
each step touches, a ``SharedAdagrad`` the relations, and ``--processes`` processes of
``torch.multiprocessing`` train the shared model lock-free (Hogwild); the parent then ranks the
held-out triples.

    shmopt data fetch wordnet
    python examples/wordnet_own_loop.py --processes 2 --steps 2000
    python examples/wordnet_own_loop.py --path MY_WORDNET_FOLDER --steps 100   # your own data.* files
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.multiprocessing as mp

from shmopt import SharedAdagrad, SharedRowwiseAdagrad, share
from shmopt.problems import load_problem


def worker(rank: int, shared, rows, rels, loss, train: torch.Tensor, batch_size: int, steps: int) -> None:
    """``steps`` steps on the shared model itself: no private copy of the entity table."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(rank)
    torch.manual_seed(rank)                         # the loss draws its negatives from torch's RNG
    for _ in range(steps):
        batch = train[torch.randint(len(train), (batch_size,), generator=gen)]
        rows.zero_grad()
        rels.zero_grad()
        loss(shared.module, (batch,)).backward()    # a sparse gradient for the entity table
        rows.step()
        rels.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1000, help="steps of each process")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--path", default=None, help="a folder of your own data.noun/verb/adj/adv")
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=512)
    args = ap.parse_args()

    problem = load_problem("wordnet-kg", data_dir=args.data_dir, path=args.path, n_test=args.n_test,
                           n_eval=args.n_eval, batch_size=args.batch_size)
    torch.manual_seed(0)
    model = problem.model()
    train = problem.train[0].share_memory_()
    ctx = mp.get_context("spawn")
    with share(model) as shared, \
            SharedRowwiseAdagrad([model.entity.weight], lr=args.lr) as rows, \
            SharedAdagrad(model.relation.parameters(), lr=args.lr) as rels:
        t0 = time.perf_counter()
        procs = [ctx.Process(target=worker, args=(r, shared, rows, rels, problem.loss, train,
                                                  problem.batch_size, args.steps))
                 for r in range(args.processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        seconds = time.perf_counter() - t0
        if any(p.exitcode != 0 for p in procs):
            raise SystemExit(f"a process failed: exit codes {[p.exitcode for p in procs]}")
        model.eval()
        with torch.no_grad():
            found = problem.metrics(model, problem.eval)
        print(f"{problem.description}")
        print(f"{rows.step_count} steps of {problem.batch_size} triples by {args.processes} processes in "
              f"{seconds:.1f} s: filtered MRR {found['mrr']:.4f}, Hits@10 {found['hits@10']:.4f}")


if __name__ == "__main__":
    main()
