"""Data larger than shared memory would hold, and data that starts at once.

1. **Mapped data.** A uint8 ``.npy`` of 32x32x3 image rows (bench/mapped_data.py) is trained with
   hogwild, 2 workers, batch 64, a linear model, for ``RUN_S`` seconds, as a memory map
   (``np.load(path, mmap_mode="c")``: every worker maps the file and reads its rows through the
   page cache) and in memory (``np.load(path)``: read whole, copied into the arena), interleaved,
   ROUNDS rounds, after one read of the file (the page cache is warm). Per worker, while it
   trains, the anonymous memory (``/proc/PID/smaps_rollup``: ``Anonymous``, the pages that belong
   to the process alone: heap, autograd, the batch) is sampled; the arena's size is read from the
   layout. Figures: samples/s mapped / in memory (goal: within 10%), and each worker's anonymous
   memory for a 0.5 GiB and a 4 GiB file (goal: flat, under 5% of the file).
2. **Time to first step.** A map-style dataset of 1,000,000 cheap items: the seconds from
   ``Problem(...)`` to the first update (problem, validation, engine, two workers started, one
   update), read per batch (the default for a dataset this long) and read up front
   (``eager=True``, what every dataset did before). Goal: under 2 s per batch.

    pytest bench/test_data_sources.py --benchmark-json=bench/results/data_sources.json
"""
from __future__ import annotations

import os
import statistics
import time

import mapped_data
import pytest

from shmopt import Config, Engine

pytestmark = pytest.mark.usefixtures("no_leaks")

GIB = 2 ** 30
SIZES = {"0.5GiB": GIB // 2, "4GiB": 4 * GIB}
WORKERS, RUN_S, ROUNDS = 2, 8.0, 3
ITEMS = 1_000_000


def _anonymous(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Anonymous line")


def _train(problem, seconds: float) -> dict:
    """Train for ``seconds``; samples/s, the arena's bytes and the workers' anonymous memory."""
    eng = Engine(problem, Config(algo="hogwild", workers=WORKERS, time_limit=seconds, eval_interval=60))
    anon: list[int] = []
    try:
        eng.start()
        t_sample = time.time() + seconds / 2
        while eng.poll() is None:
            if time.time() >= t_sample:
                anon += [_anonymous(p.pid) for p in eng.procs]
                t_sample = time.time() + 0.5
            time.sleep(0.01)
        stats = eng.stats()
        return {"samples_per_s": stats["samples"] / max(time.time() - eng.record.t_go, 1e-9),
                "arena_bytes": sum(n for _, n in eng.layout.regions), "anonymous": anon}
    finally:
        eng.close()


def _warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


@pytest.fixture(scope="module")
def files(tmp_path_factory, quick):
    folder = os.environ.get("SHMOPT_BENCH_DATA") or str(tmp_path_factory.mktemp("mapped"))
    sizes = {"0.5GiB": SIZES["0.5GiB"] // 8, "4GiB": SIZES["0.5GiB"] // 2} if quick else SIZES
    return {label: (p := os.path.join(folder, f"images-{label}.npy"), mapped_data.make_file(p, n))[0]
            for label, n in sizes.items()}


def test_mapped_data_against_in_memory(benchmark, files, quick):
    rounds, seconds = (1, 3.0) if quick else (ROUNDS, RUN_S)
    runs: dict[str, list[dict]] = {"mapped_small": [], "mapped": [], "in_memory": []}
    for _ in range(rounds):
        for label, path, mapped in (("mapped_small", files["0.5GiB"], True), ("mapped", files["4GiB"], True),
                                    ("in_memory", files["4GiB"], False)):
            _warm(path)
            problem = mapped_data.images(path, mapped=mapped)
            runs[label].append(_train(problem, seconds))
            del problem
    ratios = [m["samples_per_s"] / i["samples_per_s"] for m, i in zip(runs["mapped"], runs["in_memory"])]
    size = {k: os.path.getsize(p) for k, p in files.items()}
    out = {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
           "file_bytes": size}
    for label, rs in runs.items():
        anon = [a for r in rs for a in r["anonymous"]]
        sps = [r["samples_per_s"] for r in rs]
        out[label] = {"samples_per_s_median": statistics.median(sps), "samples_per_s_min": min(sps),
                      "samples_per_s_max": max(sps), "arena_bytes": rs[0]["arena_bytes"],
                      "anonymous_median": statistics.median(anon), "anonymous_max": max(anon)}
    out["anonymous_share_of_file"] = out["mapped"]["anonymous_max"] / size["4GiB"]
    benchmark.extra_info.update(kind="mapped_data", quick=quick, rounds=rounds, run_s=seconds,
                                workers=WORKERS, **out)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert out["mapped"]["arena_bytes"] < out["in_memory"]["arena_bytes"] / 100    # the file is not copied


def _first_step(items: int, eager: bool | None) -> dict:
    t0 = time.perf_counter()
    problem = mapped_data.cheap(items, eager)
    t_problem = time.perf_counter()
    eng = Engine(problem, Config(algo="hogwild", workers=WORKERS, steps=10_000, eval_interval=60))
    try:
        t_engine = time.perf_counter()
        eng.start()
        while eng.updates() < 1:
            eng.check_processes()
            time.sleep(0.001)
        t_first = time.perf_counter()
    finally:
        eng.close()
    return {"problem_s": t_problem - t0, "engine_s": t_engine - t_problem, "first_step_s": t_first - t0}


def test_time_to_first_step_of_a_million_items(benchmark, quick, warm_forkserver):
    items = ITEMS // 10 if quick else ITEMS
    lazy = [_first_step(items, None) for _ in range(1 if quick else ROUNDS)]
    eager = _first_step(items, True)
    firsts = [r["first_step_s"] for r in lazy]
    benchmark.extra_info.update(kind="first_step", quick=quick, items=items, workers=WORKERS,
                                per_batch_median=statistics.median(firsts), per_batch_min=min(firsts),
                                per_batch_max=max(firsts), per_batch_runs=lazy, up_front=eager)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert eager["problem_s"] > max(r["problem_s"] for r in lazy)       # no item read up front
