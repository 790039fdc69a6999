"""Word vectors (``skipgram``): shmopt hogwild against gensim's Word2Vec (bench/gensim_peer.py),
same corpus, dim, window, negatives, min_count, subsampling and epochs, 1 and 2 workers.

Goals (the issue's):

* ``time to gensim's quality``: shmopt with 2 workers reaches gensim's final (2-worker) WordSim-353
  Spearman in less training time than gensim took (start-up reported apart: shmopt's reading of
  the corpus into pairs and its spawn; gensim's vocabulary scan).
* ``words/s per worker``: shmopt / gensim at equal workers, goal >= 0.5x. Words/s = corpus words x
  epochs / training time, for both (shmopt's epochs are its samples over the pairs).
* ``speed-up``: shmopt's words/s with 2 workers over 1 worker, goal >= 1.8.
* ``quality``: shmopt's WordSim-353 Spearman within 0.03 of gensim's at equal epochs, with the
  run-to-run spread (min - max over ROUNDS) of both.

Each round runs gensim 1, gensim 2, shmopt 1, shmopt 2 workers (the order alternates round to
round); the table gives medians and spreads over rounds. shmopt runs ``EPOCHS`` epochs of the pairs
(``steps = epochs x pairs / batch``) with its default rule (hogwild, row SGD) and the problem's
learning rate decaying linearly over the steps to FLOOR of it (``--lr-schedule linear:0.004``, as
word2vec's rate decays), evaluated every EVAL_S seconds by the supervisor (its analogy test scores every
question against the whole vocabulary: on 2 cores that CPU is taken from the workers, and counted
in shmopt's words/s); the metrics are computed by the same code (shmopt/problems/word_tests.py) on both
tools' vectors. The metric against training time of the last round is written to
docs/results/skipgram_CORPUS.csv and .png (docs/word-vectors.md shows them).

    pytest bench/test_skipgram.py --benchmark-json=bench/results/skipgram.json
    python bench/report.py --docs . bench/results/skipgram.json

Needs ``shmopt data fetch brown`` and ``shmopt data fetch word-tests`` (SHMOPT_DATA_DIR or
``--data-dir``'s default), and gensim (``pip install -e '.[peers]'``; the bench skips, saying so,
without it). ``SHMOPT_BENCH_SG_CORPUS=janeausten`` chooses the other corpus.
``SHMOPT_BENCH_QUICK=1``: Jane Austen, 1 epoch of gensim, shmopt for a few seconds, 1 round
(the time goal is then not reached: its run is too short).
"""
from __future__ import annotations

import csv
import math
import os
import statistics

import pytest

import shmopt
from shmopt.errors import ProblemError
from shmopt.problems import load_problem
from shmopt.problems.skipgram import load_corpus

pytestmark = pytest.mark.usefixtures("no_leaks")
HERE = os.path.dirname(os.path.abspath(__file__))
PLOTS = os.path.join(os.path.dirname(HERE), "docs", "results")
OPTIONS = {"dim": 100, "window": 5, "negatives": 5, "min_count": 5, "subsample": 1e-3}
METRIC = "wordsim_spearman"
FLOOR = 0.004       # word2vec's min_alpha / alpha
EVAL_S = 15.0       # seconds between shmopt's evaluations (the analogy test takes CPU from the workers)


def _settings(quick: bool) -> dict:
    if quick:
        return {"corpus": "janeausten", "epochs": 1, "rounds": 1, "shmopt_s": 4.0}
    return {"corpus": os.environ.get("SHMOPT_BENCH_SG_CORPUS", "brown"), "epochs": 5, "rounds": 3,
            "shmopt_s": None}


def _shmopt(problem, workers: int, epochs: int, seconds: float | None) -> dict:
    steps = math.ceil(epochs * problem.num_train / problem.batch_size)
    eval_every = seconds / 4 if seconds else EVAL_S
    # on a step budget the rate decays linearly to 0.4% of itself, as word2vec's (gensim: alpha 0.025
    # down to min_alpha 0.0001); a time-limited (quick) run keeps it constant
    opts = {"time_limit": seconds} if seconds else {"steps": steps, "lr_schedule": f"linear:{FLOOR}"}
    res = shmopt.train(problem, algo="hogwild", workers=workers, eval_interval=eval_every, **opts)
    st = res.stats
    return {"seconds": st["wall_s"], "startup_s": st["startup_s"], "epochs": st["epochs"],
            "history": [{"t": h["t"], **{k: h[k] for k in h if k.endswith(("_spearman", "_accuracy"))}}
                        for h in res.history if METRIC in h],
            "final_metrics": st["final_metrics"], "samples_per_s": st["samples_per_s"]}


def _first_time(history: list[dict], target: float) -> float | None:
    hit = [h["t"] for h in history if h[METRIC] >= target]
    return hit[0] if hit else None


def _write_plot(corpus: str, curves: dict[str, list[dict]]) -> None:
    os.makedirs(PLOTS, exist_ok=True)
    base = os.path.join(PLOTS, f"skipgram_{corpus}")
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "t", METRIC])
        for name, hist in curves.items():
            w.writerows([name, f"{h['t']:.3f}", f"{h[METRIC]:.4f}"] for h in hist)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, hist in curves.items():
        ax.plot([h["t"] for h in hist], [h[METRIC] for h in hist], marker=".", label=name)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("WordSim-353 Spearman")
    ax.set_title(f"skip-gram on {corpus}: shmopt hogwild vs gensim Word2Vec")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(base + ".png", dpi=110)
    plt.close(fig)


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@pytest.mark.timeout_s(3600)
def test_skipgram_against_gensim(benchmark, quick, warm_forkserver):
    gensim_peer = pytest.importorskip("gensim_peer")
    pytest.importorskip("gensim", reason="gensim not installed: pip install -e '.[peers]' (gensim==4.4.0)")
    s = _settings(quick)
    data_dir = os.environ.get("SHMOPT_DATA_DIR")
    try:
        problem = load_problem("skipgram", corpus=s["corpus"], data_dir=data_dir, **OPTIONS)
        docs = load_corpus(s["corpus"], data_dir)
    except ProblemError as exc:
        pytest.skip(f"data missing: {exc}")
    words = sum(len(d) for d in docs)
    runs: dict[str, list[dict]] = {k: [] for k in ("gensim 1", "gensim 2", "shmopt 1", "shmopt 2")}
    order = list(runs)

    def one_round():
        for label in order:
            tool, w = label.split()
            if tool == "gensim":
                r = gensim_peer.train_gensim(docs, workers=int(w), epochs=s["epochs"], seed=0,
                                             data_dir=data_dir, **OPTIONS)
            else:
                r = _shmopt(problem, int(w), s["epochs"], s["shmopt_s"])
                r["words"] = r["epochs"] * words
                r["words_per_s"] = r["words"] / r["seconds"]
            runs[label].append(r)
        order.reverse()

    benchmark.pedantic(one_round, rounds=s["rounds"], iterations=1)
    _write_plot(s["corpus"], {k: v[-1]["history"] for k, v in runs.items()})
    out: dict = {}
    for label, rs in runs.items():
        out[label] = {"words_per_s": _spread([r["words_per_s"] for r in rs]),
                      "seconds": _spread([r["seconds"] for r in rs]),
                      "startup_s": _spread([r["startup_s"] for r in rs]),
                      "epochs": statistics.median(r.get("epochs", s["epochs"]) for r in rs),
                      **{m: _spread([r["final_metrics"][m] for r in rs])
                         for m in ("wordsim_spearman", "simlex_spearman", "analogy_accuracy")}}
    target = out["gensim 2"][METRIC]["median"]
    hits = [_first_time(r["history"], target) for r in runs["shmopt 2"]]
    w1, w2 = (statistics.median(r["words_per_s"] for r in runs[f"shmopt {w}"]) for w in (1, 2))
    benchmark.extra_info.update(
        kind="skipgram", corpus=s["corpus"], quick=quick, rounds=s["rounds"], words=words,
        pairs=problem.num_train, vocab=problem.model().inp.num_embeddings, batch_size=problem.batch_size,
        **OPTIONS, epochs=s["epochs"], runs=out, target_spearman=target,
        gensim_time_s=out["gensim 2"]["seconds"]["median"],
        shmopt_time_to_target_s=statistics.median(hits) if all(h is not None for h in hits) else None,
        ratio_1=w1 / out["gensim 1"]["words_per_s"]["median"], ratio_2=w2 / 2 / (
            out["gensim 2"]["words_per_s"]["median"] / 2), speedup=w2 / w1,
        spearman_gap=out["shmopt 2"][METRIC]["median"] - target,
        wordsim_pairs=runs["shmopt 2"][-1]["final_metrics"]["wordsim_pairs"])
    assert all(r["words_per_s"] > 0 for rs in runs.values() for r in rs)
