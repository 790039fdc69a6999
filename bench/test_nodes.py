"""Across nodes on one machine: scaling efficiency, the DDP comparison, bytes and communication.

Two fake nodes (each a ``python -m shmopt run`` with one worker and one thread, gloo over
127.0.0.1) against one node with one worker, the same family, measured back to back in every
round (medians over rounds; this machine is shared and noisy):

* scaling efficiency = samples/s of 2 nodes x 1 worker / (2 x samples/s of 1 node x 1 worker),
  for apam with H (``--exchange-every``) in {1, 10, 100}, lsgd, easgd and sync on ``mlp``; and,
  as the machine's own ceiling, two independent 1-node runs at the same time against 2 x one
  alone (on 2 cores the lone run has the second core for its supervisor and the OS);
  evaluations every 5 s in all of them, so they cost the same everywhere;
* bytes handed to collectives per update and the share of wall time a collective was in flight
  (overlapped with training for apam/lsgd/easgd; on the update's path for sync);
* torch DistributedDataParallel over gloo with 2 ranks (bench/ddp_baseline.py) against shmopt's
  sync and apam (H = 10) on 2 nodes: samples/s and time to a target eval loss.

    pytest bench/test_nodes.py --benchmark-json=bench/results/nodes.json
    python bench/report.py bench/results/nodes.json
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import pytest
from ddp_baseline import ddp_run, time_to
from fake_nodes import ROOT
from fake_nodes import run_nodes as run_fake_nodes

PROBLEM = "mlp"
TARGET = 0.75                   # mlp eval loss; every contender reaches it within a few seconds
FAMILIES = [("apam H=1", "apam", ("--exchange-every", "1")),
            ("apam H=10", "apam", ("--exchange-every", "10")),
            ("apam H=100", "apam", ("--exchange-every", "100")),
            ("lsgd", "lsgd", ()), ("easgd", "easgd", ()), ("sync", "sync", ())]


def run_nodes(algo: str, args: tuple[str, ...], nodes: int, seconds: float,
              log: str | None = None) -> list[dict]:
    """One job of ``nodes`` fake nodes x 1 worker on PROBLEM for ``seconds``."""
    return run_fake_nodes(algo, (*args, "--time-limit", str(seconds)), nodes, PROBLEM, log,
                          timeout=seconds + 120)


def run_pair(algo: str, args: tuple[str, ...], seconds: float) -> float:
    """Two independent single-node runs at once (no link): samples/s summed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "shmopt", "run", PROBLEM, "--algo", algo, "-w", "1", "--threads", "1",
           "--time-limit", str(seconds), "--json", "-q", *args]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return sum(json.loads(p.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1])["samples_per_s"]
               for p in procs)


def _first_at(path: str, target: float) -> float | None:
    with open(path, encoding="utf-8") as f:
        return time_to([(s["t"], s["loss"]) for s in map(json.loads, f)], target)


@pytest.mark.timeout_s(3600)
def test_nodes(benchmark, quick):
    rounds, seconds = (1, 4.0) if quick else (3, 6.0)
    runs: list[dict] = []

    def one_round():
        r: dict = {"families": {}}
        for label, algo, args in FAMILIES:
            args = (*args, "--eval-interval", "5")
            one = run_nodes(algo, args, 1, seconds)[0]
            two = run_nodes(algo, args, 2, seconds)
            pair = run_pair(algo, args, seconds)
            sps = sum(s["samples_per_s"] for s in two)
            r["families"][label] = {
                "one_node": one["samples_per_s"], "two_nodes": sps, "independent_pair": pair,
                "efficiency": sps / (2 * one["samples_per_s"]), "vs_pair": sps / pair,
                "pair_efficiency": pair / (2 * one["samples_per_s"]),
                "bytes_per_update": statistics.mean(s["bytes_per_update"] for s in two),
                "comm_share": statistics.mean(s["comm_share"] for s in two),
                "exchanges": two[0]["exchanges"], "parameters": one["parameters"]}
        with tempfile.TemporaryDirectory() as d:
            ddp = ddp_run(PROBLEM, 2 * seconds, eval_interval=0.25)
            r["ddp"] = {"samples_per_s": ddp["samples_per_s"], "time_to_target": time_to(ddp["curve"], TARGET)}
            for label, algo, args in (("sync", "sync", ()), ("apam H=10", "apam", ("--exchange-every", "10"))):
                log = os.path.join(d, f"{algo}.jsonl")
                two = run_nodes(algo, args, 2, 2 * seconds, log=log)
                r[f"shmopt {label}"] = {"samples_per_s": sum(s["samples_per_s"] for s in two),
                                        "time_to_target": _first_at(os.path.join(d, f"{algo}.node0.jsonl"),
                                                                    TARGET)}
        runs.append(r)

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    med = {label: {k: statistics.median(r["families"][label][k] for r in runs)
                   for k in runs[0]["families"][label]} for label, _, _ in FAMILIES}

    def median_of(name: str, key: str):
        vals = [r[name][key] for r in runs if r[name][key] is not None]
        return statistics.median(vals) if vals else None
    peers = {name: {k: median_of(name, k) for k in ("samples_per_s", "time_to_target")}
             for name in ("ddp", "shmopt sync", "shmopt apam H=10")}
    benchmark.extra_info.update(kind="nodes", problem=PROBLEM, rounds=rounds, seconds=seconds,
                                target=TARGET, families=med, peers=peers, runs=runs)
    assert all(m["two_nodes"] > 0 for m in med.values())
