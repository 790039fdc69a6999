"""The docs tables of bench/test_schedules.py (learning-rate schedules on breast-cancer: the gap to
the optimum at a step budget) and bench/test_time_to_accuracy.py (the time to target accuracy per
algorithm and schedule, against the mnist_hogwild pattern)."""
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


def _target(value: float) -> str:
    return f"within {-value:g}% of the optimum" if value < 0 else f"accuracy {value:g}"


def _reached(cell: dict) -> str:
    if cell["median"] is None:
        return f"not reached ({cell['missed']} missed)" if cell["min"] is None else \
            f"median not reached ({cell['min']:.2f} - {cell['max']:.2f} s; {cell['missed']} missed)"
    missed = f"; {cell['missed']} missed" if cell["missed"] else ""
    return f"{cell['median']:.2f} s ({cell['min']:.2f} - {cell['max']:.2f}{missed})"


def time_to_accuracy(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "time_to_accuracy")
    out: list[str] = []
    for e in found:
        targets = e["targets"]
        steps = ", ".join(f"{a} {n:,}" for a, n in sorted(e["steps"].items()))
        out += [f"**{e['problem']}**, 2 workers, {e['seconds']:g} s ({steps} updates), copies every "
                f"{e['every']:g} s, {e['rounds']} rounds:", "",
                "| | `--lr-schedule` | samples/s | " + " | ".join(f"time to {_target(g)}" for g in targets) + " |",
                "|---|---|---:|" + "---:|" * len(targets)]
        for r in e["rows"]:
            out.append(f"| {r['label']} | {r['schedule'] if r['label'] != 'mnist_hogwild pattern' else '(its own)'} | "
                       f"{r['samples_per_s']:,.0f} | " + " | ".join(_reached(r[str(g)]) for g in targets) + " |")
        if e.get("quick"):
            out += ["", "**Smoke run (SHMOPT_BENCH_QUICK=1): not the measurement.**"]
        out.append("")
    return out[:-1]


TABLES = {"schedules": schedules, "time_to_accuracy": time_to_accuracy}
