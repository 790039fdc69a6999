"""The docs table of bench/test_adaptive_k.py (adaptive K against fixed K)."""
from __future__ import annotations

from report_nodes import of_kind


def _schedule(sched: list[list]) -> str:
    return " → ".join(f"{k}" if i == 0 else f"{k} at {t:.1f} s" for i, (t, _, k) in enumerate(sched))


def adaptive_k(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "adaptive_k")
    if not found:
        return []
    e = found[0]
    rows = [f"| k-sync, {e['workers']} workers, {e['problem']}, delays {e['delay']}, lr {e['lr']} | "
            f"time to loss {e['target']:g}, median of {e['rounds']} | each round | updates to the target "
            f"(median run) | K over time (median run) |", "|---|---:|---|---:|---|"]
    for row in e["rows"]:
        runs = sorted(row["runs"], key=lambda r: float("inf") if r["time_to_target"] is None
                      else r["time_to_target"])
        mid = runs[len(runs) // 2]
        med = f"not reached in {e['cap_s']:g} s" if row["median_s"] is None else f"{row['median_s']:.2f} s"
        each = ", ".join("–" if t is None else f"{t:.2f}" for t in row["times"])
        name = "adaptive" if row["k"] == "adaptive" else f"K = {row['k']}"
        upd = "" if mid["updates_to_target"] is None else f"{mid['updates_to_target']:,}"
        rows.append(f"| {name} | {med} | {each} | {upd} | {_schedule(mid['k_schedule'])} |")
    return rows


TABLES = {"adaptive_k": adaptive_k}
