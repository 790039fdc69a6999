"""Adaptive K against fixed K (issue #15): time to a target eval loss, k-sync on logreg with
stragglers (4 workers, exponential delays of mean 20 ms, sgd at lr 0.1, evaluations every 0.25 s).

Each round runs every configuration back to back (fixed K = 1, 2, 3, 4 and ``--k adaptive``), in
an order rotated from round to round; the table gives the median over rounds of the time until
an evaluation reaches the target (a run that does not reach it within the cap counts as
infinite). The target sits below K = 1's error floor and above what K = P reaches quickly: the
trade-off adaptive K is for.

    python -m pytest bench/test_adaptive_k.py --benchmark-json=bench/results/adaptive_k.json
    python bench/report.py --docs . bench/results/adaptive_k.json
"""
from __future__ import annotations

import math
import statistics

import pytest

import shmopt
from shmopt.problems import load_problem

pytestmark = pytest.mark.usefixtures("no_leaks")

WORKERS, DELAY, LR, TARGET, EVAL_S = 4, "exp:0.02", 0.1, 0.4356, 0.25
CONFIGS = [1, 2, 3, 4, "adaptive"]


def _time_to_target(history: list[dict], target: float) -> tuple[float | None, int | None]:
    for h in history:
        if h["loss"] is not None and h["loss"] <= target:
            return h["t"], h["updates"]
    return None, None


def test_adaptive_k_time_to_target(benchmark, quick, warm_forkserver):
    rounds, cap = (1, 10.0) if quick else (3, 20.0)
    problem = load_problem("logreg")
    runs: dict[str, list[dict]] = {str(k): [] for k in CONFIGS}

    def run_all():
        for r in range(rounds):
            order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
            for k in order:
                res = shmopt.train(problem, algo="k-sync", k=k, workers=WORKERS, rule="sgd", lr=LR,
                                   delay=DELAY, target_loss=TARGET, time_limit=cap,
                                   eval_interval=EVAL_S, seed=r)
                st = res.stats
                t, u = _time_to_target(res.history, TARGET)
                runs[str(k)].append({"time_to_target": t, "updates_to_target": u,
                                     "updates": st["updates"], "wall_s": st["wall_s"],
                                     "final_loss": st["final_loss"], "k_schedule": st["k_schedule"],
                                     "samples_per_s": st["samples_per_s"]})

    benchmark.pedantic(run_all, rounds=1, iterations=1)
    rows = []
    for k, rs in runs.items():
        times = [math.inf if x["time_to_target"] is None else x["time_to_target"] for x in rs]
        med = statistics.median(times)
        rows.append({"k": k, "median_s": None if math.isinf(med) else med,
                     "times": [None if math.isinf(t) else t for t in times], "runs": rs})
    benchmark.extra_info.update(kind="adaptive_k", problem="logreg", algo="k-sync", workers=WORKERS,
                                delay=DELAY, lr=LR, target=TARGET, cap_s=cap, eval_interval=EVAL_S,
                                rounds=rounds, optimum=problem.optimum, rows=rows)
    adaptive = runs["adaptive"]
    assert all(r["k_schedule"][0][2] == 1 for r in adaptive)      # it starts at K = 1
    assert any(len(r["k_schedule"]) > 1 for r in adaptive)        # and K rose in some run
