"""The docs tables of bench/test_wordnet_kg.py (``wordnet-kg``: shmopt against the PyTorch-BigGraph
pattern) and bench/test_kg_metric_pykeen.py (the filtered MRR against pykeen's evaluator)."""
from __future__ import annotations

from report_nodes import of_kind

_NAMES = {"shmopt1": "shmopt hogwild, 1 worker", "shmopt2": "shmopt hogwild, 2 workers",
          "pbg1": "PBG pattern, 1 process", "pbg2": "PBG pattern, 2 processes"}


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def wordnet_kg(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "wordnet_kg")
    if not found:
        return []
    e = found[0]
    rows = [f"| {e['model']} dim {e['dim']}, {e['seconds']:g} s of training, median of {e['rounds']} | "
            f"edges/s (per worker) | start-up | filtered MRR (min - max) | Hits@10 |",
            "|---|---:|---:|---:|---:|"]
    for name, label in _NAMES.items():
        r = e["runs"][name]
        rows.append(f"| {label} | {r['samples_per_s']:,.0f} ({r['per_worker']:,.0f}) | {r['startup_s']:.1f} s | "
                    f"{r['mrr']:.4f} ({r['mrr_min']:.4f} - {r['mrr_max']:.4f}) | {r['hits10']:.4f} |")
    t = e["time_to_pbg2_mrr"]
    reach = "not reached" if t is None else f"{t:.1f} s"
    ok = t is not None and t < e["seconds"]
    rows += [f"| **shmopt 2 workers: training time to the PBG pattern's MRR at 2 processes** (goal < "
             f"{e['seconds']:g} s) | **{reach}** ({e['reached']} rounds) | | {_met(ok)} | |",
             f"| **edges/s per worker, shmopt / PBG pattern** (1; 2 workers) | **{e['per_worker_ratio_1']:.2f}x; "
             f"{e['per_worker_ratio_2']:.2f}x** | | | |",
             f"| **speed-up 2 / 1 worker** (goal >= 1.8 for shmopt): shmopt; PBG pattern | "
             f"**{e['speedup_shmopt']:.2f}x; {e['speedup_pbg']:.2f}x** | | {_met(e['speedup_shmopt'] >= 1.8)} | |"]
    if e.get("quick"):
        rows += ["", "**Smoke run (SHMOPT_BENCH_QUICK=1: 6 s runs, 1 round, 100 ranked triples): "
                     "not the measurement.**"]
    return rows


def kg_metric_check(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "kg_metric_check")
    rows = ["| pykeen dataset | entities | test triples | filtered MRR: shmopt / pykeen | Hits@10: shmopt / pykeen |",
            "|---|---:|---:|---:|---:|"]
    for e in found:
        rows.append(f"| {e['dataset']} | {e['entities']} | {e['test_triples']} | {e['shmopt']['mrr']:.6f} / "
                    f"{e['pykeen']['mrr']:.6f} | {e['shmopt']['hits@10']:.6f} / {e['pykeen']['hits@10']:.6f} |")
    return rows if found else []


TABLES = {"wordnet_kg": wordnet_kg, "kg_metric_check": kg_metric_check}
