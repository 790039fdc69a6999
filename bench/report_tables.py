"""The docs table of bench/test_tables.py (sparse tables in the engine: 2 workers over 1, a large
table over a small one, a worker's private memory as the table grows)."""
from __future__ import annotations

import math

from report_nodes import of_kind


def _rows(n: int) -> str:
    e = math.log10(n)
    return f"10^{round(e)}" if n > 0 and e == round(e) else f"{n:,}"


def _met(value: float, goal: float, above: bool = True) -> str:
    return "yes" if (value >= goal if above else value < goal) else "no"


def _percent(share: float) -> str:
    return f"{100 * share:.2f}%" if abs(share) >= 5e-5 else "0.00%"


def _ratio(e: dict) -> str:
    return f"{e['ratio']:.2f}x ({e['ratio_min']:.2f} - {e['ratio_max']:.2f}; {e['pairs']})"


def _speed(benchmarks: list[dict]) -> list[str]:
    rows = ["| embedding-bag, dim 32, batch 64, direct protocol | algo | samples/s (rows/s) | "
            "ratio: median (min - max; pairs) | goal | met | other load, cores (max) |",
            "|---|---|---:|---:|---:|---|---:|"]
    for e in of_kind(benchmarks, "tables_scaling"):
        rows.append(f"| 2 workers / 1 worker, {_rows(e['rows'])} rows | {e['algo']} | "
                    f"{e['1']['samples_per_s']:,.0f} -> {e['2']['samples_per_s']:,.0f} "
                    f"({e['1']['rows_per_s']:,.0f} -> {e['2']['rows_per_s']:,.0f}) | {_ratio(e)} | "
                    f">= {e['goal']} | {_met(e['ratio'], e['goal'])} | {e['other_cores_max']:.2f} |")
    for e in of_kind(benchmarks, "tables_size"):
        w = e["workers"]
        rows.append(f"| {_rows(e['rows_large'])} rows / {_rows(e['rows_small'])} rows, {w} worker"
                    f"{'s' if w > 1 else ''} | {e['algo']} | {e['small']['samples_per_s']:,.0f} -> "
                    f"{e['large']['samples_per_s']:,.0f} ({e['small']['rows_per_s']:,.0f} -> "
                    f"{e['large']['rows_per_s']:,.0f}) | {_ratio(e)} | >= {e['goal']} | "
                    f"{_met(e['ratio'], e['goal'])} | {e['other_cores_max']:.2f} |")
    return rows


_MEMORY_CELLS = (
    lambda s: f"{s['arena_mb']:,.0f} MiB",
    lambda s: f"{s['worker_peak_max_mb']:,.1f} MiB",
    lambda s: f"{max(s['worker_shared_peak_mb']):,.0f} MiB",
    lambda s: f"{s['supervisor_peak_beyond_mb']:+,.0f} MiB ({s['supervisor_peak_x_table']:.2f}x, "
              f"{s['supervisor_peak_phase']})",
    lambda s: f"{s['supervisor_train_beyond_mb']:+,.0f} MiB",
    lambda s: f"{s['startup_s']:.1f} s",
)


def _memory(benchmarks: list[dict]) -> list[str]:
    found = {e["algo"]: e for e in of_kind(benchmarks, "tables_memory")}
    if not found:
        return []
    algos = list(found)
    head = " / ".join(algos)
    rows = [f"| {next(iter(found.values()))['workers']} workers, {head} | table | arena | "
            "peak private per worker (max of the workers) | shared resident per worker (arena, libraries) | supervisor's peak beyond its start "
            "(x table bytes, phase) | supervisor while training, beyond its start | start-up |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_rows: dict[int, dict[str, dict]] = {}
    for algo, e in found.items():
        for s in e["sizes"]:
            by_rows.setdefault(s["rows"], {})[algo] = s

    def cell(per: dict[str, dict], fmt) -> str:
        return " / ".join(fmt(per[a]) if a in per else "-" for a in algos)

    for n, per in sorted(by_rows.items()):
        table = next(iter(per.values()))["table_mb"]
        rows.append(f"| {_rows(n)} rows | {table:,.1f} MiB | "
                    + " | ".join(cell(per, fmt) for fmt in _MEMORY_CELLS) + " |")
    e0 = next(iter(found.values()))
    growth = " / ".join(f"{_percent(found[a]['growth_share'])} "
                        f"({_met(found[a]['growth_share'], found[a]['goal'], above=False)})" for a in algos)
    rows.append(f"| **growth of a worker's peak, {_rows(e0['rows_from'])} -> {_rows(e0['rows_to'])} rows, "
                f"share of the {_rows(e0['rows_to'])}-row table's bytes** (goal < {100 * e0['goal']:.0f}%) "
                f"| | | **{growth}** | | | | |")
    return rows


def tables(benchmarks: list[dict]) -> list[str]:
    """The speed table, then the memory table (one block; a smoke run says so)."""
    speed, memory = _speed(benchmarks), _memory(benchmarks)
    out = speed if len(speed) > 2 else []
    if memory:
        out = out + ([""] if out else []) + memory
    quick = [b["extra_info"] for b in benchmarks
             if str(b.get("extra_info", {}).get("kind", "")).startswith("tables_") and b["extra_info"].get("quick")]
    if out and quick:
        out = out + ["", "**Smoke run (SHMOPT_BENCH_QUICK=1: 1 s runs, 1 pair): not the measurement.**"]
    return out


TABLES = {"tables": tables}
