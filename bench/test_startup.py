"""Start-up and shutdown: the time from ``Engine.start()`` to every worker stepping
(``stats["startup_s"]``), and the time of ``Engine.close()`` (stop flag, join, final copy,
unlink), for apam with 2 workers on ``mlp``.

Every round starts a fresh Python interpreter (a subprocess) that runs, back to back:

1. ``forkserver`` cold: the first run of the interpreter starts shmopt's forkserver, which
   imports torch once (what every first ``shmopt run`` pays);
2. ``forkserver`` warm: the second run forks the workers from the running forkserver;
3. ``spawn``: every worker is a fresh interpreter that imports torch (cold every time).

Ratios (cold forkserver / warm, spawn / warm) are per round, medians over rounds.

    pytest bench/test_startup.py --benchmark-json=bench/results/startup.json
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("no_leaks")

WORKERS = 2

SCRIPT = r"""
import json, sys, time
import shmopt
from shmopt.problems import load_problem

workers = int(sys.argv[1])
prob = load_problem("mlp")
out = {}
for label, method in (("forkserver_cold", "forkserver"), ("forkserver_warm", "forkserver"),
                      ("spawn", "spawn")):
    eng = shmopt.Engine(prob, shmopt.Config(algo="apam", workers=workers, steps=50,
                                            start_method=method))
    try:
        eng.start()
        while eng.poll() is None:
            time.sleep(0.005)
        t = time.perf_counter()
        eng.close()
        close_s = time.perf_counter() - t
        st = eng.stats()
        out[label] = {"startup_s": st["startup_s"], "close_s": close_s, "updates": st["updates"]}
    finally:
        eng.close()
print("RESULT " + json.dumps(out))
"""


def _one_interpreter(workers: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(workers)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.timeout_s(900)
def test_startup_and_shutdown(benchmark, quick):
    rounds = 2 if quick else 3
    runs: list[dict] = []
    benchmark.pedantic(lambda: runs.append(_one_interpreter(WORKERS)), rounds=rounds, iterations=1)

    def med(label: str, key: str) -> float:
        return statistics.median(r[label][key] for r in runs)

    def ratio(a: str, b: str, key: str = "startup_s") -> float:
        return statistics.median(r[a][key] / r[b][key] for r in runs)

    labels = ("forkserver_cold", "forkserver_warm", "spawn")
    benchmark.extra_info.update(
        kind="startup", problem="mlp", algo="apam", workers=WORKERS, rounds=rounds,
        startup_s={k: med(k, "startup_s") for k in labels},
        close_s={k: med(k, "close_s") for k in labels},
        cold_vs_warm=ratio("forkserver_cold", "forkserver_warm"),
        spawn_vs_warm=ratio("spawn", "forkserver_warm"),
        runs=runs)
    for r in runs:
        for k in labels:
            assert r[k]["updates"] >= 50 and r[k]["startup_s"] > 0 and r[k]["close_s"] > 0
    # a warm forkserver forks workers with torch already imported: faster than importing it
    assert ratio("spawn", "forkserver_warm") > 1.0
