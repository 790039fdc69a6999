"""Figures with a straggler that depend on the machine's speed, moved out of the test suite (the
tests assert only what the protocols guarantee):

* k-sync, K = 1, 2 workers, worker 1 100x slower (delays of mean 2 s): how many of worker 1's
  gradients are cancelled, per update, in a 2 s run (waiting the delays out would allow 1 or 2);
* hogwild, 2 workers, worker 1 20x slower: the staleness of the applied gradients (worker 0
  applies about 20 while worker 1 computes one).

The figures go into ``benchmark.extra_info``; nothing here asserts a timing.

    python -m pytest bench/test_straggler_figures.py --benchmark-json=bench/results/stragglers.json
"""
from __future__ import annotations

import pytest

import shmopt
from shmopt.problems import load_problem

pytestmark = pytest.mark.usefixtures("no_leaks")


def test_k_sync_cancellations_per_update(benchmark, warm_forkserver):
    quad = load_problem("quadratic", n=512, d=8)
    out = {}

    def run():
        out["r"] = shmopt.train(quad, algo="k-sync", workers=2, k=1, time_limit=2.0, lr=0.05,
                                delay="exp:0.02", slow=("1:100",))

    benchmark.pedantic(run, rounds=1, iterations=1)
    st = out["r"].stats
    benchmark.extra_info.update(kind="k_sync_cancellation", updates=st["updates"],
                                cancelled=st["cancelled"],
                                cancelled_per_update=st["cancelled"] / max(1, st["updates"]))


def test_staleness_with_a_slow_worker(benchmark, warm_forkserver):
    quad = load_problem("quadratic", n=1024, d=16)
    out = {}

    def run():
        out["r"] = shmopt.train(quad, algo="hogwild", workers=2, steps=800, lr=0.01,
                                delay="shifted-exp:0.001:0.0005", slow=("1:20",))

    benchmark.pedantic(run, rounds=1, iterations=1)
    st = out["r"].stats
    benchmark.extra_info.update(kind="slow_worker_staleness", staleness_max=st["staleness_max"],
                                staleness_mean=st["staleness_mean"], staleness_hist=st["staleness_hist"],
                                fresh_share=st["staleness_hist"].get("0", 0) / max(1, st["applied"]))
