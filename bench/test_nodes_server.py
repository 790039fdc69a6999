"""Server protocols across nodes on one machine: 2 fake nodes x 1 worker (bench/fake_nodes.py),
the global applier on node 0 and a relay on node 1.

* **Time per update against the theory with the nodes as learners**: every K-variant, K = 1 and
  2 of P = 2, exponential delays of mean 20 ms on a tiny quadratic (the delays dominate); node
  0's ``iteration_time_mean_s`` against ``shmopt theory`` for the delay alone and for X =
  compute + delay, as bench/test_theory_match.py does inside a node.
* **APAM across nodes against sync across nodes** on logreg with stragglers (exp:0.02 delays on
  every learner): time to a target loss, for apam's master-worker form (the global applier),
  sync (an all-reduce per update) and apam direct with H = 10 (#11's delta averaging).
* **The global applier's ceiling**: apam ``--protocol server`` with no delay (learners as fast as
  they go) on logreg and mlp: messages and bytes per update, the applier process's CPU time per
  update ``c`` and the remote node's gradient rate ``g``; with K = 1 one update per gradient, so
  the applier saturates near N = 1 / (c · g) nodes like the remote one.

    pytest bench/test_nodes_server.py --benchmark-json=bench/results/nodes_server.json
    python bench/report.py bench/results/nodes_server.json
"""
from __future__ import annotations

import json
import os
import tempfile

import pytest
from ddp_baseline import time_to
from fake_nodes import run_nodes

from shmopt.strategies.theory import expected_iteration_time, simulate

P, DELAY = 2, "exp:0.02"
UPDATES = {1: 1000, 2: 600}
TARGET = 0.4435                 # logreg (optimum 0.4347), as in the README's compare
VARIANTS = ["k-sync", "k-batch-sync", "k-async", "k-batch-async"]


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("variant", VARIANTS)
def test_time_per_update_across_nodes_matches_theory(benchmark, variant, k):
    out = {}

    def run():
        out["s"] = run_nodes(variant, ("--k", str(k), "--steps", str(UPDATES[k]), "--delay", DELAY,
                                       "--lr", "0.01", "--eval-interval", "2"), 2, "quadratic")

    benchmark.pedantic(run, rounds=1, iterations=1)
    s0, s1 = out["s"]
    compute = (s0["compute_mean_s"] + s1["compute_mean_s"]) / 2
    pure = expected_iteration_time(variant, P, k, DELAY)
    with_c = expected_iteration_time(variant, P, k, DELAY, compute=compute)
    measured = s0["iteration_time_mean_s"]
    _, se = simulate(variant, P, k, DELAY, compute=compute, iterations=s0["updates"], seed=1)
    benchmark.extra_info.update(
        kind="theory_nodes", variant=variant, workers=P, k=k, delay=DELAY, updates=s0["updates"],
        measured_s=measured, theory_s=pure.expected_iteration_time_s, theory_method=pure.method,
        theory_with_compute_s=with_c.expected_iteration_time_s, compute_mean_s=compute,
        ratio=measured / pure.expected_iteration_time_s,
        ratio_with_compute=measured / with_c.expected_iteration_time_s,
        sampling_se_rel=se / with_c.expected_iteration_time_s,
        messages_per_update=s0["messages_per_update"])


CONTENDERS = [("apam, global applier", "apam", ("--protocol", "server")),
              ("sync, all-reduce", "sync", ()),
              ("apam direct, H = 10", "apam", ("--exchange-every", "10"))]


@pytest.mark.parametrize("name, algo, args", CONTENDERS)
def test_time_to_target_with_stragglers(benchmark, name, algo, args):
    out = {}

    def run():
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "log.jsonl")
            out["s"] = run_nodes(algo, (*args, "--delay", DELAY, "--target-loss", str(TARGET),
                                        "--time-limit", "60"), 2, "logreg", log=log)
            with open(os.path.join(d, "log.node0.jsonl"), encoding="utf-8") as f:
                out["t"] = time_to([(s["t"], s["loss"]) for s in map(json.loads, f)], TARGET)

    benchmark.pedantic(run, rounds=1, iterations=1)
    s0 = out["s"][0]
    benchmark.extra_info.update(kind="target_nodes", name=name, target=TARGET, delay=DELAY,
                                time_to_target=out["t"], updates=s0["updates"],
                                samples_per_s=s0["samples_per_s"] + out["s"][1]["samples_per_s"],
                                final_loss=s0["final_loss"])


@pytest.mark.parametrize("problem", ["logreg", "mlp"])
def test_global_applier_ceiling(benchmark, problem):
    out = {}

    def run():
        out["s"] = run_nodes("apam", ("--protocol", "server", "--time-limit", "6"), 2, problem)

    benchmark.pedantic(run, rounds=1, iterations=1)
    s0, s1 = out["s"]
    c = s0["applier_cpu_s_per_update"]
    g = s1["gradients"] / s1["wall_s"]                       # the remote node's gradients per second
    benchmark.extra_info.update(
        kind="applier_nodes", problem=problem, parameters=s0["parameters"], updates=s0["updates"],
        updates_per_s=s0["updates"] / s0["wall_s"], messages_per_update=s0["messages_per_update"],
        bytes_per_update=s0["bytes_per_update"] + s1["bytes_per_update"],
        applier_cpu_ms=1e3 * c, remote_gradients_per_s=g, saturation_nodes=1.0 / (c * g))
