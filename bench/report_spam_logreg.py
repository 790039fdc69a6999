"""The docs table of bench/test_spam_logreg.py (``spam-logreg``: APAM, sync AMSGrad, hogwild SGD and
row-wise Adagrad at 1 and 2 workers against full-batch L-BFGS and scikit-learn)."""
from __future__ import annotations

from report_nodes import of_kind


def _s(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f} s"


def _spread(median: float, span: list[float], fmt: str) -> str:
    return f"{median:{fmt}} ({span[0]:{fmt}} - {span[1]:{fmt}})"


def _runs(e: dict) -> list[str]:
    lb = e["lbfgs"]
    rows = [f"| {e['train']:,} training messages, {e['seconds']:g} s runs, {e['rounds']} round(s); "
            f"gap target {e['target']:g} | workers | samples/s (per worker; / L-BFGS's) | speed-up 2/1 "
            f"(goal >= {e['speedup_goal']}) | time to target (training) | start-up | final gap F - F* | "
            f"held-out accuracy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in e["cases"]:
        for w in ("1", "2"):
            s = c[w]
            speed = (f"{c['speedup']:.2f}x ({c['speedup_spread'][0]:.2f} - {c['speedup_spread'][1]:.2f})"
                     if w == "2" else "")
            ratio = f"; {c['per_worker_vs_lbfgs']:.2f}x" if w == "2" else ""
            rows.append(f"| {c['label']} | {w} | {s['samples_per_s']:,.0f} ({s['samples_per_s_per_worker']:,.0f}"
                        f"{ratio}) | {speed} | {_s(s['time_to_target_s'])} ({s['reached']}/{e['rounds']}) | "
                        f"{s['startup_s']:.1f} s | {_spread(s['final_gap'], s['final_gap_spread'], '.4f')} | "
                        f"{_spread(s['final_accuracy'], s['final_accuracy_spread'], '.3f')} |")
    rows.append(f"| **L-BFGS** (full batch, {lb['threads']} thread; the peer) | 1 | {lb['samples_per_s']:,.0f} | | "
                f"{_s(lb['time_to_target_s'])} | | {lb['final_gap']:.1e} after {lb['seconds']:.1f} s | |")
    return rows


def tables(benchmarks: list[dict]) -> list[str]:
    """The runs' table, the scikit-learn row, and a smoke-run line when quick."""
    out: list[str] = []
    for e in of_kind(benchmarks, "spam_runs"):
        out += _runs(e)
    for e in of_kind(benchmarks, "spam_peer"):
        out += ["", f"scikit-learn `LogisticRegression` (lbfgs, same hashed features, C = 1/(N l2)): "
                    f"held-out accuracy {e['accuracy']:.3f}, gap {e['final_gap']:.1e}, "
                    f"{e['iterations']} iterations, fit {e['seconds']:.1f} s."]
    if any(e.get("quick") for kind in ("spam_runs", "spam_peer") for e in of_kind(benchmarks, kind)):
        out += ["", "**Smoke run (SHMOPT_BENCH_QUICK=1: 1,500 messages, 3 s runs, 1 round, on a shared "
                    "and loaded machine): not the measurement.**"]
    return out


TABLES = {"spam_logreg": tables}
