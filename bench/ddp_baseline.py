"""The peer a user would pick across machines: torch DistributedDataParallel over gloo.

Two ranks (spawned here, one thread each, as two fake nodes), the problem's model built under
the same seed, ``torch.optim.Adam(amsgrad=True)`` at the problem's rate, the problem's per-rank
mini-batch drawn the way shmopt's workers draw it. Rank 0 evaluates the model on the eval rows
every ``eval_interval`` seconds in its own loop (what a DDP user does); the time to a target loss
is the first such evaluation at or below it. The parent owns the store (no port race).
"""
from __future__ import annotations

import datetime
import os
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shmopt.problems import load_problem

EVAL_ROWS = 8192
CHECK_EVERY = 20                # steps between the ranks' stop votes (one tiny all_reduce)


def _rank(rank: int, world: int, port: int, problem_name: str, seconds: float, eval_interval: float,
          out) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False,
                          timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    problem = load_problem(problem_name)
    torch.manual_seed(0)
    model = problem.model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=problem.lr.get("amsgrad", 1e-3), amsgrad=True)
    gen = torch.Generator().manual_seed(rank)
    train, bs = problem.train, problem.batch_size
    ev = tuple(t[:EVAL_ROWS] for t in problem.eval)
    curve: list[tuple[float, float]] = []

    def evaluate(t: float) -> None:
        model.eval()
        with torch.no_grad():
            curve.append((t, float(problem.loss(model, ev))))
        model.train()

    dist.barrier()
    t0 = time.perf_counter()
    next_eval, steps = 0.0, 0
    stop = torch.zeros(1)
    while True:
        now = time.perf_counter() - t0
        if steps % CHECK_EVERY == 0:        # the ranks agree when to stop (same step count)
            stop[0] = float(now >= seconds)
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            if stop[0] > 0:
                break
        if rank == 0 and now >= next_eval:
            evaluate(now)
            next_eval = now + eval_interval
        idx = torch.randint(len(train[0]), (bs,), generator=gen)
        opt.zero_grad()
        problem.loss(ddp, tuple(t[idx] for t in train)).backward()
        opt.step()
        steps += 1
    elapsed = time.perf_counter() - t0
    dist.barrier()
    out.put({"rank": rank, "steps": steps, "elapsed": elapsed, "samples_per_s": steps * bs / elapsed,
             "curve": curve})
    dist.destroy_process_group()


def ddp_run(problem_name: str, seconds: float, world: int = 2, eval_interval: float = 0.5) -> dict[str, Any]:
    """Samples/s over all ranks and rank 0's (t, eval loss) curve."""
    store = dist.TCPStore("127.0.0.1", 0, world + 1, is_master=True, wait_for_workers=False)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, world, store.port, problem_name, seconds,
                                             eval_interval, out)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=seconds + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
    results.sort(key=lambda r: r["rank"])
    return {"samples_per_s": sum(r["samples_per_s"] for r in results), "curve": results[0]["curve"],
            "steps": [r["steps"] for r in results]}


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, loss in curve if loss <= target), None)
