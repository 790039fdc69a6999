"""PyTorch-BigGraph's single-machine training pattern, written here from its description (not
its code), as the peer of ``wordnet-kg`` (bench/test_wordnet_kg.py).

PBG (Lerer et al., SysML 2019) trains on one machine with Hogwild processes of
``torch.multiprocessing`` over embeddings in shared memory, and an Adagrad whose state is one
float per row (row-wise Adagrad) kept in shared memory too. Each process, at every step:

1. draws a batch of training triples (uniform with replacement, as shmopt's workers) and, for
   each, ``negatives`` entities drawn uniformly that replace its tail or its head (a coin flip);
2. copies the entity rows the step touches (the unique ones) and the relation embeddings out of
   the shared tensors into local tensors: PBG's *local copy* guard, so that another process
   writing those rows meanwhile cannot change what this step computes with;
3. computes the same model's scores and logistic loss (``kg_models.logistic_loss``) on the
   local copy and its gradient;
4. updates the shared state and rows without locks: ``s_i += mean_j g_ij^2`` (index_add), and
   ``W_i -= lr g_i / (sqrt(s_i) + eps)`` with ``s_i`` the local value (index_add of the step),
   the relations with an element-wise Adagrad.

The parent holds the shared tensors; ``during(model)`` sees a model whose tables ARE the shared
ones (to evaluate them while the processes train, as shmopt's supervisor does). Processes start
with spawn, report ready, and train from one start signal for ``seconds``: the start-up is apart.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.multiprocessing as mp
from baselines import START_TIMEOUT_S, _get, check_exits, reap

from shmopt.problems import Problem
from shmopt.problems.kg_models import KGModel, corruptions, logistic_loss

EPS = 1e-10


def _step(model: KGModel, shared: dict, triples: torch.Tensor, negatives: int, l2: float, lr: float,
          gen: torch.Generator) -> float:
    """One step of the pattern (the module docstring) on ``model``'s shared tensors."""
    b = len(triples)
    corrupt, tail_side = corruptions(b, negatives, shared["entity"].shape[0], gen)
    rows, local_idx = torch.unique(torch.cat([triples[:, 0], triples[:, 2], corrupt.ravel()]),
                                   return_inverse=True)
    ent = shared["entity"][rows].clone().requires_grad_(True)         # the local copy
    rel = shared["relation"].clone().requires_grad_(True)
    hi, ti, ni = local_idx[:b], local_idx[b:2 * b], local_idx[2 * b:].view(b, negatives)
    loss = logistic_loss(model, ent[hi], rel[triples[:, 1]], ent[ti], ent[ni], tail_side, l2)
    g_ent, g_rel = torch.autograd.grad(loss, (ent, rel))
    with torch.no_grad():
        inc = g_ent.pow(2).mean(1)
        s = shared["entity_state"][rows] + inc                        # this step's local value
        shared["entity_state"].index_add_(0, rows, inc)
        shared["entity"].index_add_(0, rows, g_ent * (-lr / (s.sqrt() + EPS)).unsqueeze(1))
        sr = shared["relation_state"].add_(g_rel * g_rel).clone()
        shared["relation"].sub_(lr * g_rel / (sr.sqrt() + EPS))
    return float(loss)


def _train(rank, model, shared, train, batch_size, negatives, l2, lr, seed, seconds, ready, go, results):
    """One process of the pattern (module-level so that spawn can import it)."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed + rank)
    ready.put(rank)
    go.wait()
    steps, loss = 0, float("nan")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(len(train), (batch_size,), generator=gen)
        loss = _step(model, shared, train[idx], negatives, l2, lr, gen)
        steps += 1
    results.put((rank, steps, time.perf_counter() - t0, loss))


def pbg_train(problem: Problem, processes: int, seconds: float, lr: float = 0.1, seed: int = 0,
              during: Callable[[KGModel], None] | None = None) -> dict[str, Any]:
    """Train ``problem`` (``wordnet-kg``) with the PBG pattern; ``during(model)`` runs in this
    process while the workers train (it must return within ``seconds``)."""
    ctx = mp.get_context("spawn")
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    model = problem.model()
    negatives, l2 = problem.loss.keywords["negatives"], problem.loss.keywords["l2"]
    shared = {"entity": model.entity.weight.detach(), "relation": model.relation.weight.detach()}
    shared["entity_state"] = torch.zeros(len(shared["entity"]))
    shared["relation_state"] = torch.zeros_like(shared["relation"])
    for t in shared.values():
        t.share_memory_()
    train = problem.train[0].share_memory_()
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    try:
        for rank in range(processes):
            p = ctx.Process(target=_train, daemon=True,
                            args=(rank, model, shared, train, problem.batch_size, negatives, l2, lr, seed,
                                  seconds, ready, go, results))
            p.start()
            procs.append(p)
        for _ in range(processes):
            _get(ready, procs, START_TIMEOUT_S)
        startup_s = time.perf_counter() - t_start
        go.set()
        if during is not None:
            during(model)
        out = [_get(results, procs, seconds + START_TIMEOUT_S) for _ in range(processes)]
        for p in procs:
            p.join(10.0)
    finally:
        reap(procs, (ready, results))
    check_exits(procs, "PBG pattern")
    steps = sum(o[1] for o in out)
    rate = sum(o[1] * problem.batch_size / o[2] for o in out)
    return {"processes": processes, "steps": steps, "seconds": max(o[2] for o in out),
            "samples_per_s": rate, "startup_s": startup_s, "final_batch_loss": max(o[3] for o in out),
            "model": model}
