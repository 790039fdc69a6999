"""Turn pytest-benchmark JSON files from bench/ into the README's markdown tables.

    python bench/report.py bench/results/scaling.json [more.json ...]
"""
from __future__ import annotations

import json
import platform
import sys


def machine(data: dict) -> str:
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {}).get("brand_raw", platform.processor() or "?")
    import os
    return f"{cpu}, {os.cpu_count()} logical cores, Python {m.get('python_version', '?')}"


def scaling(benchmarks: list[dict]) -> list[str]:
    rows = ["| problem | algo | protocol | samples/s, 1 worker | samples/s, 2 workers | speed-up |",
            "|---|---|---|---:|---:|---:|"]
    for b in benchmarks:
        e = b.get("extra_info", {})
        if "speedup_2_vs_1" not in e:
            continue
        rows.append(f"| {e['problem']} | {e['algo']} | {e.get('protocol', 'direct')} | "
                    f"{e['samples_per_s_1']:,.0f} | "
                    f"{e['samples_per_s_2']:,.0f} | {e['speedup_2_vs_1']:.2f}x |")
    return rows


def theory(benchmarks: list[dict]) -> list[str]:
    rows = ["| variant | P | K | measured s/update | theory (delay only) | ratio | theory (compute + delay) | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in benchmarks:
        e = b.get("extra_info", {})
        if e.get("kind") != "theory":
            continue
        rows.append(f"| {e['variant']} | {e['workers']} | {e['k']} | {e['measured_s'] * 1e3:.2f} ms | "
                    f"{e['theory_s'] * 1e3:.2f} ms ({e['theory_method']}) | {e['ratio']:.3f} | "
                    f"{e['theory_with_compute_s'] * 1e3:.2f} ms | {e['ratio_with_compute']:.3f} |")
    return rows if len(rows) > 2 else []


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        print(f"Measured on: {machine(data)} ({data.get('datetime', '')[:10]})\n")
        for table in (scaling, theory):
            rows = table(data["benchmarks"])
            if rows and len(rows) > 2:
                print("\n".join(rows))
                print()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
