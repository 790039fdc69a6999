"""Knowledge-graph embeddings on WordNet (``wordnet-kg``, DistMult, dim 64, 10 negatives, batch
512): shmopt against PyTorch-BigGraph's training pattern (bench/pbg_baseline.py), same model,
same negatives, same loss, same row-wise Adagrad on the entity table (lr 0.1), one thread per
process, 1 and 2 workers. shmopt runs ``hogwild --table-rule rowwise-adagrad`` (the relations,
dense, with SGD at the same lr; the PBG pattern gives them an element-wise Adagrad).

Goals, each measured from the same runs (ROUNDS rounds of the four runs, interleaved, the order
alternating round to round; medians over rounds):

* ``mrr at equal time``: the filtered MRR and Hits@10 of every run at its last evaluation within
  SECONDS of training (a run that overshoots its time limit gains nothing from it), and their
  spread (min - max over rounds): shmopt at 2 workers within the noise of the PBG pattern.
* ``time to the peer's quality``: the training time shmopt at 2 workers takes to reach the MRR
  of the PBG pattern at 2 processes after SECONDS: goal less than SECONDS. Start-up (loading the data,
  building the arena / spawning the processes) is reported apart.
* ``edges/s per worker``: training triples per second per worker, shmopt over the PBG pattern.
* ``speed-up``: edges/s at 2 workers over 1 worker, of each; goal >= 1.8 for shmopt.

Both evaluate while training, from the parent (shmopt's supervisor; the PBG pattern's parent on
the shared tensors), every EVAL_EVERY seconds, on the first N_EVAL held-out triples with one
thread. The MRR-against-time plot and its log go to docs/results/wordnet_mrr.{png,csv}.

    shmopt data fetch wordnet            # into the data folder ($SHMOPT_DATA_DIR or the default)
    pytest bench/test_wordnet_kg.py --benchmark-json=bench/results/wordnet_kg.json
    python bench/report.py --docs . bench/results/wordnet_kg.json

``SHMOPT_BENCH_QUICK=1``: 6 s runs, 1 round, 100 ranked triples: a smoke test, not a measurement.
"""
from __future__ import annotations

import csv
import os
import shutil
import statistics
import time

import pytest
import torch
from pbg_baseline import pbg_train

import shmopt
from shmopt.errors import ProblemError
from shmopt.problems import load_problem, packages

pytestmark = pytest.mark.usefixtures("no_leaks")
HERE = os.path.dirname(os.path.abspath(__file__))
PLOTS = os.path.join(os.path.dirname(HERE), "docs", "results")
LR = 0.1
RUNS = ("shmopt1", "shmopt2", "pbg1", "pbg2")


def _settings(quick: bool) -> dict:
    return ({"seconds": 6.0, "rounds": 1, "eval_every": 2.0, "n_eval": 100} if quick else
            {"seconds": 60.0, "rounds": 3, "eval_every": 5.0, "n_eval": 500})


@pytest.fixture(scope="module")
def problem(quick):
    n_eval = _settings(quick)["n_eval"]
    try:
        return load_problem("wordnet-kg", n_eval=n_eval)
    except ProblemError:
        if shutil.which("apt-get") is None:
            pytest.skip("WordNet is not in the data folder and apt-get is missing: run "
                        "`shmopt data fetch wordnet` on a Debian system first")
    packages.fetch("wordnet")
    return load_problem("wordnet-kg", n_eval=n_eval)


def _metrics(problem, model) -> dict[str, float]:
    """The problem's metrics of ``model`` as shmopt's supervisor computes them (one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.eval()
        return problem.metrics(model, problem.eval)
    finally:
        model.train()
        torch.set_num_threads(threads)


def _shmopt(problem, workers: int, s: dict) -> dict:
    t0 = time.perf_counter()
    r = shmopt.train(problem, algo="hogwild", workers=workers, threads=1, time_limit=s["seconds"],
                     eval_interval=s["eval_every"], lr=LR, table_rule="rowwise-adagrad", table_lr=LR)
    st = r.stats
    history = [(h["t"], h["mrr"], h["hits@10"]) for h in r.history]
    return {"history": history, "samples_per_s": st["samples_per_s"], "startup_s": st["startup_s"],
            "training_s": st["wall_s"], "total_s": time.perf_counter() - t0, **_at(history, s["seconds"])}


def _pbg(problem, workers: int, s: dict) -> dict:
    seen: list[tuple[float, float, float]] = []

    def evaluate(model):
        t0 = time.perf_counter()
        seen.append((0.0, *_metrics(problem, model).values()))
        while time.perf_counter() - t0 < s["seconds"] - s["eval_every"]:
            time.sleep(max(0.0, s["eval_every"] - (time.perf_counter() - t0) % s["eval_every"]))
            seen.append((time.perf_counter() - t0, *_metrics(problem, model).values()))

    t0 = time.perf_counter()
    out = pbg_train(problem, workers, s["seconds"], lr=LR, during=evaluate)
    final = _metrics(problem, out["model"])
    seen.append((out["seconds"], final["mrr"], final["hits@10"]))
    return {"history": seen, "samples_per_s": out["samples_per_s"], "startup_s": out["startup_s"],
            "training_s": out["seconds"], "total_s": time.perf_counter() - t0, **_at(seen, s["seconds"])}


def _at(history: list[tuple[float, float, float]], seconds: float) -> dict[str, float]:
    """The metrics of the last evaluation within ``seconds`` of training (2% slack): a run that
    overshoots its time limit (an evaluation in progress when it expires) gains nothing by it."""
    t, mrr, hits = [h for h in history if h[0] <= 1.02 * seconds][-1]
    return {"mrr": mrr, "hits@10": hits, "at_s": t}


def _time_to(history: list[tuple[float, float, float]], mrr: float) -> float | None:
    hit = [t for t, m, _ in history if m >= mrr]
    return hit[0] if hit else None


def _plot(runs: dict[str, list[dict]], title: str) -> None:
    os.makedirs(PLOTS, exist_ok=True)
    out = os.path.join(PLOTS, "wordnet_mrr")
    with open(out + ".csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "round", "t", "mrr", "hits@10"])
        for name, rs in runs.items():
            for i, r in enumerate(rs):
                w.writerows([name, i, f"{t:.2f}", f"{m:.5f}", f"{h:.5f}"] for t, m, h in r["history"])
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    labels = {"shmopt1": "shmopt hogwild, 1 worker", "shmopt2": "shmopt hogwild, 2 workers",
              "pbg1": "PBG pattern, 1 process", "pbg2": "PBG pattern, 2 processes"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rs in runs.items():
        for i, r in enumerate(rs):
            ax.plot([h[0] for h in r["history"]], [h[1] for h in r["history"]], marker=".",
                    color=f"C{RUNS.index(name)}", alpha=1.0 if i == 0 else 0.4,
                    label=labels[name] if i == 0 else None)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("filtered MRR (held-out)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    plt.close(fig)


@pytest.mark.timeout_s(1800)
def test_wordnet_kg_against_the_pbg_pattern(benchmark, quick, warm_forkserver, problem):
    s = _settings(quick)
    runs: dict[str, list[dict]] = {k: [] for k in RUNS}
    order = list(RUNS)
    do = {"shmopt1": lambda: _shmopt(problem, 1, s), "shmopt2": lambda: _shmopt(problem, 2, s),
          "pbg1": lambda: _pbg(problem, 1, s), "pbg2": lambda: _pbg(problem, 2, s)}

    def one_round():
        for name in order:
            runs[name].append(do[name]())
        order.reverse()

    benchmark.pedantic(one_round, rounds=s["rounds"], iterations=1)
    _plot(runs, f"wordnet-kg, DistMult dim 64: {s['seconds']:g} s, {s['n_eval']} held-out triples ranked")

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    def ratio(a: str, b: str) -> float:
        return statistics.median(x["samples_per_s"] / y["samples_per_s"] for x, y in zip(runs[a], runs[b]))

    time_to = [_time_to(a["history"], b["mrr"]) for a, b in zip(runs["shmopt2"], runs["pbg2"])]
    reached = [t for t in time_to if t is not None]
    benchmark.extra_info.update(
        kind="wordnet_kg", quick=quick, **s, model="distmult", dim=64, lr=LR,
        runs={name: {"samples_per_s": med(name, "samples_per_s"),
                     "per_worker": med(name, "samples_per_s") / (1 if name.endswith("1") else 2),
                     "startup_s": med(name, "startup_s"), "mrr": med(name, "mrr"),
                     "mrr_min": min(r["mrr"] for r in runs[name]), "mrr_max": max(r["mrr"] for r in runs[name]),
                     "hits10": med(name, "hits@10")} for name in RUNS},
        time_to_pbg2_mrr=statistics.median(reached) if len(reached) == len(time_to) else None,
        reached=f"{len(reached)}/{len(time_to)}",
        speedup_shmopt=ratio("shmopt2", "shmopt1"), speedup_pbg=ratio("pbg2", "pbg1"),
        per_worker_ratio_1=ratio("shmopt1", "pbg1"), per_worker_ratio_2=ratio("shmopt2", "pbg2"))
    assert all(r["samples_per_s"] > 0 and 0.0 < r["mrr"] <= 1.0 for rs in runs.values() for r in rs)
