"""Scaling to N workers: samples/s for 1, 2, cores and 2 x cores workers (1, 2, 4 on a 2-core
machine; ``SHMOPT_BENCH_WORKERS=1,2,3,4`` to choose), for each algorithm family:

* ``hogwild`` (SGD, direct: every worker applies its own update lock-free);
* ``apam`` (AMSGrad, direct: shared m, v, v-hat updated lock-free);
* ``apam-server`` (``apam --protocol server``: one applier process, K-async with K = 1);
* ``k-async`` (SGD at one server, K = max(1, P // 2));
* ``lsgd`` (Leader SGD: one replica per worker, pulled toward the leader every 10 steps);

on ``mlp`` (compute-bound) and ``logreg`` (cheap gradients, overhead-bound). Each round runs
every worker count back to back (the starting count rotates from round to round) for SECONDS of
training after start-up; the speed-up of P workers is the per-round ratio to 1 worker of the
same round, median over rounds. ``worker_cores`` is the CPU the engine's processes got (CPU
seconds / wall seconds, bench/conftest.py CpuProbe) and ``other_cores_max`` the most the rest of
the machine used during any of the runs: a speed-up below P on P <= cores workers with
worker_cores well below P means the cores were busy elsewhere. Server protocols run one more
process (the applier) than workers; on 2 cores, 2 x cores workers oversubscribe the machine by
design.

    pytest bench/test_scaling_n.py --benchmark-json=bench/results/scaling_n.json
"""
from __future__ import annotations

import os
import statistics

import pytest

import shmopt
from shmopt.problems import load_problem

pytestmark = pytest.mark.usefixtures("no_leaks")

FAMILIES = {
    "hogwild": {"algo": "hogwild"},
    "apam": {"algo": "apam"},
    "apam-server": {"algo": "apam", "protocol": "server"},
    "k-async": {"algo": "k-async"},
    "lsgd": {"algo": "lsgd"},
}


def worker_counts() -> list[int]:
    env = os.environ.get("SHMOPT_BENCH_WORKERS")
    if env:
        return sorted({int(w) for w in env.split(",")})
    cores = os.cpu_count() or 1
    return sorted({1, 2, cores, 2 * cores})


@pytest.fixture(scope="module")
def problems():
    return {"mlp": load_problem("mlp"), "logreg": load_problem("logreg")}


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("problem", ["mlp", "logreg"])
def test_samples_per_second_1_to_n_workers(benchmark, quick, warm_forkserver, cpu_probe, problems, problem,
                                           family):
    seconds, rounds = (1.0, 2) if quick else (2.0, 3)
    prob, options = problems[problem], FAMILIES[family]
    counts = worker_counts()
    runs: dict[int, list[dict]] = {w: [] for w in counts}
    order = list(counts)

    def one_round():
        for w in order:
            probe = cpu_probe()
            st = shmopt.train(prob, workers=w, time_limit=seconds, eval_interval=seconds / 2,
                              on_sample=probe, **options).stats
            runs[w].append({"samples_per_s": st["samples_per_s"], "startup_s": st["startup_s"],
                            "staleness_mean": st["staleness_mean"], "updates": st["updates"],
                            **probe.cores()})
        order.append(order.pop(0))

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)

    def rates(w: int) -> list[float]:
        return [r["samples_per_s"] for r in runs[w]]

    speedup = {w: statistics.median(a / b for a, b in zip(rates(w), rates(counts[0]))) for w in counts}
    benchmark.extra_info.update(
        kind="scaling_n", problem=problem, family=family, options=options, seconds=seconds,
        rounds=rounds, cores=os.cpu_count(), workers=counts,
        samples_per_s={str(w): statistics.median(rates(w)) for w in counts},
        speedup={str(w): speedup[w] for w in counts},
        startup_s={str(w): statistics.median(r["startup_s"] for r in runs[w]) for w in counts},
        staleness_mean={str(w): statistics.median(r["staleness_mean"] for r in runs[w]) for w in counts},
        worker_cores={str(w): statistics.median(r.get("worker_cores", 0.0) for r in runs[w]) for w in counts},
        supervisor_cores={str(w): statistics.median(r.get("supervisor_cores", 0.0) for r in runs[w])
                          for w in counts},
        other_cores_max=max(r.get("other_cores", 0.0) for rs in runs.values() for r in rs),
        ratios={str(w): [a / b for a, b in zip(rates(w), rates(counts[0]))] for w in counts})
    assert all(statistics.median(rates(w)) > 0 for w in counts)
