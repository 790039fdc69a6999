"""Baselines: shmopt against what a PyTorch user would write instead (bench/baselines.py).

Every round runs, back to back and in this order:

1. the bare single-process loop (fused AMSGrad, the thread count of one shmopt worker);
2. shmopt ``apam`` with 1 worker;
3. the PyTorch mnist_hogwild pattern with 1 process;
4. shmopt ``apam`` with 2 workers;
5. the mnist_hogwild pattern with 2 processes;
6. (mlp) shmopt ``apam`` with 1 and 2 workers and ``check_finite=False`` (the engine's check of
   every gradient for NaN/Inf switched off: what that check costs; see also
   test_worker_step_profile, where one step's time goes);

each for SECONDS of training after start-up, the same model, loss and mini-batch size; the
ratios are computed per round and reported as medians over rounds:

* ``apam2_vs_hogwild2``: samples/s of shmopt apam with 2 workers / the pattern with 2 processes
  (target >= 1.2: the shared AMSGrad state and the fused kernel against private per-process
  Adam state and torch's default for-loop Adam);
* ``overhead_1``: shmopt's time per step with 1 worker / the bare loop's (target <= 1.05).

    pytest bench/test_baselines.py --benchmark-json=bench/results/baselines.json
"""
from __future__ import annotations

import cProfile
import dataclasses
import json
import os
import pstats
import statistics

import baselines
import pytest

import shmopt
from shmopt.plan import default_threads
from shmopt.problems import load_problem

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("problem", ["mlp", "logreg"])
def test_shmopt_vs_pytorch_baselines(benchmark, quick, warm_forkserver, cpu_probe, problem):
    seconds, rounds = (1.0, 2) if quick else (2.0, 3)
    prob = load_problem(problem)
    explain = problem == "mlp"          # the no-check runs explain mlp's figures; logreg is cheap
    keys = ("bare", "apam1", "hog1", "apam2", "hog2") + (("apam1_nocheck", "apam2_nocheck") if explain else ())
    runs: dict[str, list[dict]] = {k: [] for k in keys}

    def apam(workers: int, **options) -> dict:
        probe = cpu_probe()
        st = shmopt.train(prob, algo="apam", workers=workers, time_limit=seconds,
                          eval_interval=seconds / 2, on_sample=probe, **options).stats
        return {"samples_per_s": st["samples_per_s"], "step_s": st["iteration_time_mean_s"] * workers,
                "startup_s": st["startup_s"], "threads": default_threads(workers), **probe.cores()}

    def one_round():
        runs["bare"].append(baselines.bare_loop(prob, seconds, threads=default_threads(1)))
        runs["apam1"].append(apam(1))
        runs["hog1"].append(baselines.hogwild(prob, 1, seconds, threads=default_threads(1)))
        runs["apam2"].append(apam(2))
        runs["hog2"].append(baselines.hogwild(prob, 2, seconds, threads=default_threads(2)))
        if explain:
            runs["apam1_nocheck"].append(apam(1, check_finite=False))
            runs["apam2_nocheck"].append(apam(2, check_finite=False))

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)

    def rate(key):
        return [r["samples_per_s"] for r in runs[key]]

    def per_round(a, b):
        return [x / y for x, y in zip(a, b)]

    r_apam2_hog2 = per_round(rate("apam2"), rate("hog2"))
    r_apam1_hog1 = per_round(rate("apam1"), rate("hog1"))
    # time per step of one worker / of the bare loop = samples/s of the bare loop / of 1 worker
    overhead = per_round(rate("bare"), rate("apam1"))
    med = {k: statistics.median(rate(k)) for k in runs}
    benchmark.extra_info.update(
        kind="baselines", problem=problem, seconds=seconds, rounds=rounds,
        batch_size=prob.batch_size, cores=os.cpu_count(),
        threads_1=default_threads(1), threads_2=default_threads(2),
        bare_fused=runs["bare"][0]["fused"],
        samples_per_s={k: v for k, v in med.items()},
        step_ms_bare=statistics.median(r["step_s"] for r in runs["bare"]) * 1e3,
        step_ms_apam1=statistics.median(r["step_s"] for r in runs["apam1"]) * 1e3,
        apam2_vs_hogwild2=statistics.median(r_apam2_hog2),
        apam1_vs_hogwild1=statistics.median(r_apam1_hog1),
        overhead_1=statistics.median(overhead),
        speedup_apam=statistics.median(per_round(rate("apam2"), rate("apam1"))),
        speedup_hogwild=statistics.median(per_round(rate("hog2"), rate("hog1"))),
        ratios_apam2_vs_hogwild2=r_apam2_hog2, ratios_overhead_1=overhead,
        apam2_nocheck_vs_hogwild2=statistics.median(per_round(rate("apam2_nocheck"), rate("hog2")))
        if explain else None,
        overhead_1_nocheck=statistics.median(per_round(rate("bare"), rate("apam1_nocheck")))
        if explain else None,
        hogwild_startup_s=statistics.median(r["startup_s"] for r in runs["hog2"]),
        other_cores_max=max(r.get("other_cores", 0.0) for k in keys if k.startswith("apam")
                            for r in runs[k]),
        hogwild2_busy_cores=statistics.median(r["busy_cores"] for r in runs["hog2"]))
    assert all(v > 0 for v in med.values())


@pytest.mark.timeout_s(300)
def test_worker_step_profile(benchmark, quick, warm_forkserver, tmp_path):
    """Where one step's time goes: a real shmopt worker (apam, 1 worker, mlp) profiled with
    cProfile from inside its loss function (baselines.ProfiledLoss), and the bare loop profiled
    the same way, one after the other, ROUNDS times; ms per step by category, medians."""
    rounds, steps = (1, 300) if quick else (3, 1000)
    prob = load_problem("mlp")
    shm: list[dict] = []
    bare: list[dict] = []

    def one_round():
        path = str(tmp_path / f"worker{len(shm)}.pstats")
        profiled = dataclasses.replace(prob, loss=baselines.ProfiledLoss(prob.loss, path, 50, steps))
        shmopt.train(profiled, algo="apam", workers=1, steps=steps + 80, eval_interval=100.0)
        with open(path + ".json", encoding="utf-8") as f:
            meta = json.load(f)
        shm.append(baselines.profile_breakdown(pstats.Stats(path), meta["wall_s"], meta["steps"]))
        prof = cProfile.Profile()
        r = baselines.bare_loop(prob, shm[-1]["total"] * steps / 1e3, threads=default_threads(1),
                                profiler=prof)
        prof.create_stats()
        bare.append(baselines.profile_breakdown(pstats.Stats(prof), r["seconds"], r["steps"]))

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    cats = list(shm[0])
    med_shm = {k: statistics.median(r[k] for r in shm) for k in cats}
    med_bare = {k: statistics.median(r[k] for r in bare) for k in cats}
    benchmark.extra_info.update(kind="step_profile", problem="mlp", algo="apam", workers=1,
                                rounds=rounds, steps=steps, shmopt_ms=med_shm, bare_ms=med_bare,
                                ratio_profiled=statistics.median(a["total"] / b["total"]
                                                                 for a, b in zip(shm, bare)))
    assert med_shm["total"] > 0 and med_bare["total"] > 0
    assert med_shm["backward"] > 0 and med_shm["optimizer step"] > 0
