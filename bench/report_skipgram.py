"""The docs tables of bench/test_skipgram.py (word vectors: shmopt hogwild against gensim's
Word2Vec): speed (words/s, per worker, the ratio to gensim, 2 workers over 1) and quality
(WordSim-353 / SimLex-999 Spearman, analogy accuracy, time to gensim's Spearman)."""
from __future__ import annotations

from typing import Callable

from report_nodes import of_kind

RUNS = ("gensim 1", "gensim 2", "shmopt 1", "shmopt 2")


def _range(s: dict, fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}} - {s['max']:{fmt}})"


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def _head(e: dict) -> str:
    return f"{e['corpus']}{' (quick)' if e['quick'] else ''}, {e['epochs']} epoch{'s' if e['epochs'] > 1 else ''}"


def _speed_rows(e: dict) -> list[str]:
    out = []
    for label in RUNS:
        r, w = e["runs"][label], int(label.split()[1])
        ratio = speedup = ""
        if label.startswith("shmopt"):
            ratio = f"{e[f'ratio_{w}']:.3f}x ({_met(e[f'ratio_{w}'] >= 0.5)})"
            speedup = f"{e['speedup']:.2f}x ({_met(e['speedup'] >= 1.8)})" if w == 2 else ""
        out.append(f"| {_head(e)}, {e['rounds']} round(s) | {label} | {_range(r['words_per_s'], ',.0f')} | "
                   f"{r['words_per_s']['median'] / w:,.0f} | {ratio} | {speedup} | "
                   f"{r['seconds']['median']:.1f} | {r['startup_s']['median']:.1f} |")
    return out


def _quality_rows(e: dict) -> list[str]:
    out = []
    for label in RUNS:
        r, when = e["runs"][label], ""
        if label == "gensim 2":
            when = f"{e['gensim_time_s']:.1f} s (its end)"
        elif label == "shmopt 2":
            t = e["shmopt_time_to_target_s"]
            when = "not reached" if t is None else f"{t:.1f} s ({_met(t < e['gensim_time_s'])})"
        run = f"{label} ({r['epochs']:.2f} epochs)" if label.startswith("shmopt") else label
        out.append(f"| {_head(e)} | {run} | {_range(r['wordsim_spearman'], '.3f')} | "
                   f"{_range(r['simlex_spearman'], '.3f')} | {_range(r['analogy_accuracy'], '.3f')} | {when} |")
    gap = e["spearman_gap"]
    out.append(f"| {_head(e)} | shmopt 2 - gensim 2 (goal: within 0.03; {int(e['wordsim_pairs'])} WordSim pairs) | "
               f"{gap:+.3f} ({_met(abs(gap) <= 0.03)}) | | | |")
    return out


def _table(header: list[str], rows_of: Callable[[dict], list[str]]) -> Callable[[list[dict]], list[str]]:
    def table(benchmarks: list[dict]) -> list[str]:
        rows = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
        for e in of_kind(benchmarks, "skipgram"):
            rows += rows_of(e)
        return rows
    return table


TABLES = {
    "skipgram_speed": _table(["corpus, epochs, rounds", "run (workers)", "words/s (min - max)", "per worker",
                              "shmopt / gensim per worker (goal >= 0.5)", "2 workers / 1 (goal >= 1.8)",
                              "training s", "start-up s"], _speed_rows),
    "skipgram_quality": _table(["corpus, epochs", "run (workers)", "WordSim-353 Spearman (min - max)",
                                "SimLex-999 Spearman", "analogy accuracy", "time to gensim's Spearman"],
                               _quality_rows),
}
