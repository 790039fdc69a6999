"""The docs table of bench/test_weights.py: publish and read of versioned weights against memcpy,
torch's share_memory() and a gloo broadcast."""
from __future__ import annotations

from report_nodes import of_kind

COLUMNS = (("memcpy", "memcpy (one copy_)"), ("publish", "publish"),
           ("publish_while_reading", "publish, a reader reading"), ("read", "read_into (another process)"),
           ("share_memory", "share_memory() + load_state_dict"), ("gloo", "gloo broadcast"))


def weights(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "weights")
    if not found:
        return []
    e = found[-1]
    rows = ["| model | " + " | ".join(label for _, label in COLUMNS) + " | read / memcpy bandwidth |",
            "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for size, row in e["sizes"].items():
        cells = [f"{1000 * row[k]['s_median']:,.2f} ms ({row[k]['gb_per_s']:.1f} GB/s)" for k, _ in COLUMNS]
        rows.append(f"| {size} | " + " | ".join(cells) + f" | {100 * row['read_share_of_memcpy']:.0f}% |")
    met = all(r["read_share_of_memcpy"] >= 0.5 for r in e["sizes"].values())
    rows += ["", f"Medians of {e['rounds']} rounds of {e['reps']} (each cell: the median time of one "
             f"copy, and the bandwidth). Goal: a read at >= 50% of memcpy bandwidth at every size: "
             f"{'met' if met else 'not met'}."]
    if e.get("quick"):
        rows += ["", "**Smoke run (SHMOPT_BENCH_QUICK=1: 1 round, no 1 GB model): not the measurement.**"]
    return rows


def weights_table(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "weights_table")
    if not found:
        return []
    e = found[-1]
    size = e["rows"] * e["dim"] * 4 / 2 ** 30
    rows = [f"| table of {e['rows']:,} x {e['dim']} ({size:.2f} GiB), {100 * e['changed']:g}% of its rows "
            f"changed per publish | whole | changed rows only | speed-up |", "|---|---:|---:|---:|"]
    for what, label in (("publish", "publish (rows=)"), ("read", "read_into (delta=True)")):
        whole, part = e[f"{what}_whole_s"], e[f"{what}_rows_s"]
        rows.append(f"| {label} | {1000 * whole:,.1f} ms | {1000 * part:,.1f} ms | {whole / part:.1f}x |")
    rows += ["", f"Medians; {e['reads_rows_only']} reads took only the changed rows. A slot receives the rows of the "
             f"last 3 publishes (it holds the version 3 publishes back), a reader that is up to date the "
             f"rows of one."]
    if e.get("quick"):
        rows += ["", "**Smoke run (SHMOPT_BENCH_QUICK=1: a 1/16 table, 1 round): not the measurement.**"]
    return rows


TABLES = {"weights": weights, "weights_table": weights_table}
