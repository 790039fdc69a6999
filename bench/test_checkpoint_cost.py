"""What checkpoints of a 2 GB arena cost a running job.

A linear model of 125M parameters (11,180 x 11,180, batch 8, 2 workers) trained with

* ``apam`` (direct protocol, AMSGrad: parameters, m, v and v-hat make a 2.0 GB arena): lock-free,
  so each checkpoint is read live, with no pause;
* ``sync`` (sync AMSGrad, server protocol: the same 2.0 GB of state, plus the gradient slots that
  a checkpoint leaves out): each checkpoint pauses every process for a private copy of the state.

Each round runs the job for ``RUN_S`` seconds without checkpoints and, right after, with a
checkpoint every ``EVERY_S`` seconds (written to a file beside the benchmark's other temporary
files, on the writer thread, as ``--checkpoint-every`` does), ROUNDS rounds interleaved. Figures:
samples/s with checkpoints / without, per round (goal: a cost under 2%), each checkpoint's pause
of the workers and its write time (from the run's ``checkpoint_log``), and the supervisor's
anonymous memory while it writes (``/proc/self/smaps_rollup``), against its level before.

    pytest bench/test_checkpoint_cost.py --benchmark-json=bench/results/checkpoint_cost.json
"""
from __future__ import annotations

import statistics
import time
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shmopt import Config, Engine, Problem

pytestmark = pytest.mark.usefixtures("no_leaks")

SIDE, BATCH, WORKERS = 11_180, 8, 2
RUN_S, EVERY_S, ROUNDS = 95.0, 30.0, 3


def _model(side: int = SIDE) -> nn.Module:
    return nn.Linear(side, side, bias=False)


def _loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def _problem(side: int) -> Problem:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, side, generator=g), torch.randn(256, side, generator=g)
    return Problem("wide", partial(_model, side), _loss, (x, y), batch_size=BATCH,
                   lr={"amsgrad": 1e-5})


def _anonymous() -> int:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Anonymous line")


def _run(problem: Problem, algo: str, seconds: float, every: float | None, path: str) -> dict:
    """Train for ``seconds``, with a checkpoint every ``every`` seconds (None: none)."""
    eng = Engine(problem, Config(algo=algo, workers=WORKERS, time_limit=seconds, eval_interval=10_000,
                                 checkpoint=path if every else None))
    anon_before, anon_during = 0, 0
    try:
        eng.start()
        next_ckpt = time.time() + (every or seconds * 2)
        anon_before = _anonymous()
        while eng.poll() is None:
            if time.time() >= next_ckpt and not eng._writer.busy:
                eng.write_checkpoint(background=True)
                next_ckpt = time.time() + every
            if every:
                anon_during = max(anon_during, _anonymous())
            time.sleep(0.02)
        wall = time.time() - eng.record.t_go
        stats = eng.stats(partial=True)
        eng.wait_checkpoint()
        log = [dict(e) for e in eng.record.checkpoint_log]
        return {"samples_per_s": stats["samples"] / wall, "updates": stats["updates"],
                "checkpoints": log, "arena_bytes": eng.layout.nbytes,
                "anonymous_before": anon_before, "anonymous_during": anon_during}
    finally:
        eng.close()


@pytest.mark.parametrize("algo", ["apam", "sync"])
def test_checkpoints_of_a_2gb_arena(benchmark, tmp_path, quick, algo):
    side, seconds, every, rounds = (2_000, 12.0, 4.0, 1) if quick else (SIDE, RUN_S, EVERY_S, ROUNDS)
    problem = _problem(side)
    path = str(tmp_path / "wide.ckpt")
    plain, with_ckpt = [], []
    for _ in range(rounds):
        plain.append(_run(problem, algo, seconds, None, path))
        with_ckpt.append(_run(problem, algo, seconds, every, path))
    ratios = [c["samples_per_s"] / p["samples_per_s"] for p, c in zip(plain, with_ckpt)]
    log = [e for r in with_ckpt for e in r["checkpoints"]]
    pauses, writes = [e["pause_s"] for e in log], [e["write_s"] for e in log]
    extra = [r["anonymous_during"] - r["anonymous_before"] for r in with_ckpt]
    benchmark.extra_info.update(
        kind="checkpoint_cost", algo=algo, quick=quick, rounds=rounds, run_s=seconds, every_s=every,
        workers=WORKERS, parameters=side * side, arena_bytes=plain[0]["arena_bytes"],
        modes=sorted({e["mode"] for e in log}), checkpoints=len(log),
        ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
        pause_median_s=statistics.median(pauses), pause_max_s=max(pauses),
        write_median_s=statistics.median(writes), write_max_s=max(writes),
        extra_memory_max=max(extra), plain=plain, with_checkpoints=with_ckpt)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert log and all(e["ok"] for e in log)
    assert {e["mode"] for e in log} == ({"live"} if algo == "apam" else {"staged"})
