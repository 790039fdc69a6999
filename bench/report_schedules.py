"""The docs table of bench/test_schedules.py (learning-rate schedules on breast-cancer: the gap to
the optimum at a step budget)."""
from __future__ import annotations

from report_nodes import of_kind


def schedules(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "schedules")
    if not found:
        return []
    e = found[-1]
    rows = [f"| breast-cancer, 2 workers, {e['steps']:,} updates | lr | `--lr-schedule` | gap to the optimum: "
            f"median (min - max; {e['seeds']} seeds) |", "|---|---:|---|---:|"]
    for r in e["rows"]:
        rows.append(f"| {r['label']} | {r['lr']:g} | `{r['schedule']}` | {r['gap_median']:.2f}% "
                    f"({r['gap_min']:.2f} - {r['gap_max']:.2f}%) |")
    goal = "met" if e["best_apam"] <= 1.0 else "not met"
    rows.append("")
    rows.append(f"Goal: apam within 1% where sync reaches 0.5%: best apam {e['best_apam']:.2f}%, best sync "
                f"{e['best_sync']:.2f}% ({goal}).")
    if e.get("quick"):
        rows.append("")
        rows.append("**Smoke run (SHMOPT_BENCH_QUICK=1: 1 seed, 1,000 updates): not the measurement.**")
    return rows


TABLES = {"schedules": schedules}
