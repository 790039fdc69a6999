"""Sparse tables in the engine (issue #23): ``embedding-bag`` (EmbeddingBag(rows, 32, sparse=True)
-> Linear, bags of 8, batch 64), hogwild and apam, direct protocol.

* ``tables_scaling``: samples/s with 2 workers over 1 worker, 10^5 rows. Goal >= 1.85 (2 cores:
  at most 2).
* ``tables_size``: samples/s with a 10^6-row table over a 10^4-row table (same data size and
  batch), 1 and 2 workers. Goal >= 0.9: a step costs the rows it touches, not the table's size.
* ``tables_memory``: peak private memory of each worker as the table grows 10^4 .. 10^7 rows, and
  its growth from the smallest to the largest table as a share of the largest table's bytes.
  Goal < 5%: a worker builds its model on meta and attaches the arena's table, never a copy.

Speed: interleaved pairs of runs of SECONDS each (the order alternates: A B, B A, ...), the ratio
per pair, median and spread (min - max) over PAIRS. samples/s counts from the workers' release
(``t_go``, shmopt/engine/record.py), so start-up (which grows with the table: its init and copy
into the arena) is outside it; it is reported apart. ``other_cores_max``: the most CPU the rest of
the machine used during a run (bench/conftest.py CpuProbe).

Memory: "private" is RSS minus shared (``psutil`` ``memory_info()``: the anonymous pages). The
arena (table, row-rule state, data) is a shared mapping: its pages count as shared whoever touches
them. A thread of this process samples every engine process every 10 ms from spawn to exit and
keeps the peak. The supervisor (this process) is sampled too, for information: it builds the model
once for the initial values (one private copy of the table until it is attached to the arena), and
the run's result is a private model (one more copy, made at close). Its figures are differences
from its own memory before the run: a table of a few MB may fit in heap the allocator kept (+0).

    pytest bench/test_tables.py --benchmark-json=bench/results/tables.json
    python bench/report.py --docs . bench/results/tables.json

``SHMOPT_BENCH_QUICK=1``: 1 s runs, 1 pair, tables up to 10^6 rows. ``SHMOPT_BENCH_TABLE_ROWS=
10000,10000000`` chooses the memory benchmark's table sizes.
"""
from __future__ import annotations

import os
import statistics
import threading

import psutil
import pytest

import shmopt
from shmopt import Config, Engine
from shmopt.problems import load_problem

pytestmark = pytest.mark.usefixtures("no_leaks")

DIM = 32
ALGOS = ["hogwild", "apam"]
SCALING_ROWS = 10**5
SMALL, LARGE = 10**4, 10**6
MEMORY_ROWS = [10**4, 10**5, 10**6, 10**7]
MEMORY_WORKERS = 2
SAMPLE_S = 0.01
MB = 2**20


def _settings(quick: bool) -> tuple[float, int]:
    """(seconds per run, pairs)."""
    return (1.0, 1) if quick else (5.0, 5)


@pytest.fixture(scope="module")
def problems():
    cache: dict = {}

    def get(rows: int):
        if rows not in cache:
            cache[rows] = load_problem("embedding-bag", rows=rows, dim=DIM)
        return cache[rows]
    return get


def _run(problem, algo: str, workers: int, seconds: float, probe) -> dict:
    st = shmopt.train(problem, algo=algo, workers=workers, time_limit=seconds,
                      eval_interval=min(1.0, seconds / 2), on_sample=probe).stats
    return {"samples_per_s": st["samples_per_s"], "rows_per_s": st["rows_per_s"],
            "rows_per_update": st["rows_touched"] / max(1, st["updates"]), "updates": st["updates"],
            "startup_s": st["startup_s"], "staleness_mean": st["staleness_mean"], **probe.cores()}


def _interleaved(benchmark, cases: dict, algo: str, seconds: float, pairs: int, cpu_probe) -> dict:
    """Run every case of ``cases`` (label -> (problem, workers)) once per pair, the order
    alternating pair to pair; label -> the runs' figures."""
    runs: dict[str, list[dict]] = {k: [] for k in cases}
    order = list(cases)

    def one_pair():
        for label in order:
            problem, workers = cases[label]
            runs[label].append(_run(problem, algo, workers, seconds, cpu_probe()))
        order.reverse()

    benchmark.pedantic(one_pair, rounds=pairs, iterations=1)
    return runs


def _summary(runs: dict[str, list[dict]], num: str, den: str) -> dict:
    """Medians of each case and the per-pair ratio num / den: median, spread, every ratio."""
    ratios = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(runs[num], runs[den])]
    out: dict = {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                 "ratios": ratios, "pairs": len(ratios),
                 "other_cores_max": max(r.get("other_cores", 0.0) for rs in runs.values() for r in rs)}
    for label, rs in runs.items():
        out[label] = {k: statistics.median(r.get(k, 0.0) for r in rs)
                      for k in ("samples_per_s", "rows_per_s", "rows_per_update", "startup_s",
                                "staleness_mean", "worker_cores")}
    return out


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("algo", ALGOS)
def test_tables_samples_per_s_2_vs_1_workers(benchmark, quick, warm_forkserver, cpu_probe, problems, algo):
    seconds, pairs = _settings(quick)
    prob = problems(SCALING_ROWS)
    runs = _interleaved(benchmark, {"1": (prob, 1), "2": (prob, 2)}, algo, seconds, pairs, cpu_probe)
    s = _summary(runs, "2", "1")
    benchmark.extra_info.update(kind="tables_scaling", algo=algo, rows=SCALING_ROWS, dim=DIM,
                                batch_size=prob.batch_size, seconds=seconds, quick=quick, goal=1.85,
                                cores=os.cpu_count(), **s)
    assert all(r["samples_per_s"] > 0 for rs in runs.values() for r in rs)


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("algo", ALGOS)
def test_tables_samples_per_s_large_vs_small_table(benchmark, quick, warm_forkserver, cpu_probe, problems,
                                                   algo, workers):
    seconds, pairs = _settings(quick)
    small, large = problems(SMALL), problems(LARGE)
    runs = _interleaved(benchmark, {"small": (small, workers), "large": (large, workers)}, algo, seconds,
                        pairs, cpu_probe)
    s = _summary(runs, "large", "small")
    benchmark.extra_info.update(kind="tables_size", algo=algo, workers=workers, rows_small=SMALL,
                                rows_large=LARGE, dim=DIM, batch_size=small.batch_size, seconds=seconds,
                                quick=quick, goal=0.9, **s)
    assert small.batch_size == large.batch_size
    assert all(r["samples_per_s"] > 0 for rs in runs.values() for r in rs)


class _Sampler(threading.Thread):
    """Every SAMPLE_S: RSS - shared of this process and of each learner of ``box["eng"]`` (once it
    exists); the peak per learner rank and the supervisor's samples with the run's phase."""

    def __init__(self, box: dict, workers: int) -> None:
        super().__init__(daemon=True)
        self.box, self.workers = box, workers
        self.done = threading.Event()
        self.peak: dict[int, int] = {}            # rank -> peak private bytes
        self.peak_shared: dict[int, int] = {}     # rank -> peak shared bytes (arena pages touched)
        self.samples: dict[int, int] = {}
        self.supervisor: list[tuple[str, int]] = []
        self._procs: dict[int, psutil.Process] = {}
        self._me = psutil.Process()

    @staticmethod
    def _phase(eng) -> str:
        if eng is None:
            return "build"                        # Engine(): Problem.validate's two models, the template
        rec = eng.record
        return "start" if not rec.t_go else ("train" if not rec.t_stop else "close")

    def _one(self) -> None:
        eng = self.box.get("eng")
        me = self._me.memory_info()
        self.supervisor.append((self._phase(eng), me.rss - me.shared))
        for rank, p in enumerate(list(eng.procs)[:self.workers] if eng is not None else []):
            if p.pid is None:
                continue                          # not started yet (Process(None) is this one)
            try:
                if p.pid not in self._procs:
                    self._procs[p.pid] = psutil.Process(p.pid)
                m = self._procs[p.pid].memory_info()
            except (psutil.Error, ValueError):
                continue                          # not started yet, or gone
            self.peak[rank] = max(self.peak.get(rank, 0), m.rss - m.shared)
            self.peak_shared[rank] = max(self.peak_shared.get(rank, 0), m.shared)
            self.samples[rank] = self.samples.get(rank, 0) + 1

    def run(self) -> None:
        while not self.done.is_set():
            self._one()
            self.done.wait(SAMPLE_S)


def _memory_case(rows: int, algo: str, seconds: float) -> dict:
    problem = load_problem("embedding-bag", rows=rows, dim=DIM)
    box: dict = {}
    sampler = _Sampler(box, MEMORY_WORKERS)
    me = psutil.Process().memory_info()
    base = me.rss - me.shared
    sampler.start()
    try:
        box["eng"] = eng = Engine(problem, Config(algo=algo, workers=MEMORY_WORKERS, time_limit=seconds,
                                                  eval_interval=600.0, eval_samples=256))
        st = eng.run().stats
    finally:
        sampler.done.set()
        sampler.join()
        box.clear()
    table = st["tables"][0]
    sup = sampler.supervisor
    train = [b for phase, b in sup if phase == "train"] or [base]
    return {"rows": rows, "table_bytes": table["bytes"], "state_bytes": table["state_bytes"],
            "arena_bytes": st["arena_bytes"], "startup_s": st["startup_s"], "updates": st["updates"],
            "rows_touched": st["rows_touched"],
            "worker_peak": [sampler.peak.get(r, 0) for r in range(MEMORY_WORKERS)],
            "worker_peak_shared": [sampler.peak_shared.get(r, 0) for r in range(MEMORY_WORKERS)],
            "worker_samples": [sampler.samples.get(r, 0) for r in range(MEMORY_WORKERS)],
            "supervisor_base": base, "supervisor_peak": max(b for _, b in sup),
            "supervisor_peak_phase": max(sup, key=lambda s: s[1])[0],
            "supervisor_train_median": statistics.median(train)}


def memory_rows(quick: bool) -> list[int]:
    env = os.environ.get("SHMOPT_BENCH_TABLE_ROWS")
    if env:
        return sorted({int(r) for r in env.split(",")})
    return [r for r in MEMORY_ROWS if r <= 10**6] if quick else MEMORY_ROWS


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("algo", ALGOS)
def test_tables_worker_memory_as_the_table_grows(benchmark, quick, warm_forkserver, algo):
    seconds = 1.0 if quick else 3.0
    sizes = memory_rows(quick)
    cases: list[dict] = []
    benchmark.pedantic(lambda: cases.extend(_memory_case(r, algo, seconds) for r in sizes),
                       rounds=1, iterations=1)
    per_size = []
    for c in cases:
        tb = c["table_bytes"]
        per_size.append({
            "rows": c["rows"], "table_mb": tb / MB, "state_mb": c["state_bytes"] / MB,
            "arena_mb": c["arena_bytes"] / MB, "startup_s": c["startup_s"], "updates": c["updates"],
            "rows_touched": c["rows_touched"], "worker_samples": c["worker_samples"],
            "worker_peak_mb": [b / MB for b in c["worker_peak"]],
            "worker_peak_max_mb": max(c["worker_peak"]) / MB,
            "worker_shared_peak_mb": [b / MB for b in c["worker_peak_shared"]],
            "supervisor_base_mb": c["supervisor_base"] / MB,
            "supervisor_peak_mb": c["supervisor_peak"] / MB,
            "supervisor_peak_beyond_mb": (c["supervisor_peak"] - c["supervisor_base"]) / MB,
            "supervisor_train_beyond_mb": (c["supervisor_train_median"] - c["supervisor_base"]) / MB,
            "supervisor_peak_phase": c["supervisor_peak_phase"],
            "supervisor_peak_x_table": (c["supervisor_peak"] - c["supervisor_base"]) / tb,
            "supervisor_train_x_table": (c["supervisor_train_median"] - c["supervisor_base"]) / tb})
    first, last = cases[0], cases[-1]
    growth = (max(last["worker_peak"]) - max(first["worker_peak"])) / last["table_bytes"]
    benchmark.extra_info.update(kind="tables_memory", algo=algo, dim=DIM, workers=MEMORY_WORKERS,
                                seconds=seconds, quick=quick, sample_s=SAMPLE_S, sizes=per_size,
                                rows_from=first["rows"], rows_to=last["rows"], growth_share=growth,
                                goal=0.05)
    for c in cases:
        assert min(c["worker_samples"]) > 0, "no memory sample of a worker"
        assert c["arena_bytes"] >= c["table_bytes"] + c["state_bytes"]
