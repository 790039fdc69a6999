"""What checkpoints of a 2 GB arena cost a running job.

A linear model of 125M parameters (11,180 x 11,180, batch 8) trained with

* ``apam`` (direct protocol, AMSGrad: parameters, m, v and v-hat make a 2.0 GB arena): lock-free,
  so each checkpoint is read live, with no pause;
* ``sync`` (sync AMSGrad, server protocol: the same 2.0 GB of state, plus the gradient slots that
  a checkpoint leaves out): each checkpoint pauses every process for a private copy of the state;

with 2 workers (on a 2-core machine, every core trains: the writer's CPU time is taken from the
workers) and, for apam, with 1 (a core left to the supervisor, which writes the checkpoints).

Each round runs the job for ``RUN_S`` seconds without checkpoints and, right after, with a
checkpoint every ``EVERY_S`` seconds (written to a file beside the benchmark's other temporary
files, on the writer thread, as ``--checkpoint-every`` does), ROUNDS rounds interleaved. Figures:
samples/s with checkpoints / without, per round (goal: a cost under 2%), each checkpoint's pause
of the workers and its write time (from the run's ``checkpoint_log``), and the supervisor's
anonymous memory while it writes (``RssAnon``), against its level before.

    pytest bench/test_checkpoint_cost.py --benchmark-json=bench/results/checkpoint_cost.json
"""
from __future__ import annotations

import os
import statistics
import time
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shmopt import Config, Engine, Problem

pytestmark = pytest.mark.usefixtures("no_leaks")

SIDE, BATCH = 11_180, 8
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
    """The supervisor's anonymous resident memory: the kernel's counter in ``/proc/self/status``
    (microseconds to read; ``smaps_rollup`` walks the page tables of the 2 GB the supervisor maps,
    30 ms a read, which took a core from the workers in the runs with checkpoints only)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon line")


def _cpu_s() -> float:
    """CPU seconds the supervisor's process has used (the writer's thread among them)."""
    t = os.times()
    return t.user + t.system


def _run(problem: Problem, algo: str, workers: int, seconds: float, every: float | None,
         path: str) -> dict:
    """Train for ``seconds``, with a checkpoint every ``every`` seconds (None: none)."""
    eng = Engine(problem, Config(algo=algo, workers=workers, time_limit=seconds, eval_interval=10_000,
                                 checkpoint=path if every else None))
    anon_before, anon_during = 0, 0
    try:
        eng.start()
        next_ckpt = time.time() + (every or seconds * 2)
        anon_before, cpu_before = _anonymous(), _cpu_s()
        while eng.poll() is None:
            if time.time() >= next_ckpt and not eng._writer.busy:
                eng.write_checkpoint(background=True)
                next_ckpt = time.time() + every
            anon_during = max(anon_during, _anonymous())    # in both runs: they differ in writes only
            time.sleep(0.02)
        wall = time.time() - eng.record.t_go
        eng.wait_checkpoint()
        cpu = _cpu_s() - cpu_before
        stats = eng.stats(partial=True)
        log = [dict(e) for e in eng.record.checkpoint_log]
        return {"samples_per_s": stats["samples"] / wall, "updates": stats["updates"],
                "checkpoints": log, "arena_bytes": eng.layout.nbytes,
                "anonymous_before": anon_before, "anonymous_during": anon_during,
                "supervisor_cpu_s": cpu}
    finally:
        eng.close()


@pytest.mark.parametrize(("algo", "workers"), [("apam", 2), ("sync", 2), ("apam", 1)])
def test_checkpoints_of_a_2gb_arena(benchmark, tmp_path, quick, algo, workers):
    side, seconds, every, rounds = (2_000, 12.0, 4.0, 1) if quick else (SIDE, RUN_S, EVERY_S, ROUNDS)
    problem = _problem(side)
    path = str(tmp_path / "wide.ckpt")
    plain, with_ckpt = [], []
    for _ in range(rounds):
        plain.append(_run(problem, algo, workers, seconds, None, path))
        with_ckpt.append(_run(problem, algo, workers, seconds, every, path))
    ratios = [c["samples_per_s"] / p["samples_per_s"] for p, c in zip(plain, with_ckpt)]
    log = [e for r in with_ckpt for e in r["checkpoints"]]
    pauses, writes = [e["pause_s"] for e in log], [e["write_s"] for e in log]
    extra = [r["anonymous_during"] - r["anonymous_before"] for r in with_ckpt]
    cpu = [(c["supervisor_cpu_s"] - p["supervisor_cpu_s"]) / max(1, len(c["checkpoints"]))
           for p, c in zip(plain, with_ckpt)]
    benchmark.extra_info.update(
        kind="checkpoint_cost", algo=algo, quick=quick, rounds=rounds, run_s=seconds, every_s=every,
        workers=workers, parameters=side * side, arena_bytes=plain[0]["arena_bytes"],
        modes=sorted({e["mode"] for e in log}), checkpoints=len(log),
        ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
        pause_median_s=statistics.median(pauses), pause_max_s=max(pauses),
        write_median_s=statistics.median(writes), write_max_s=max(writes),
        extra_memory_max=max(extra), writer_cpu_median_s=statistics.median(cpu), plain=plain, with_checkpoints=with_ckpt)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert log and all(e["ok"] for e in log)
    assert {e["mode"] for e in log} == ({"live"} if algo == "apam" else {"staged"})
