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


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        print(f"Measured on: {machine(data)} ({data.get('datetime', '')[:10]})\n")
        print("\n".join(scaling(data["benchmarks"])))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
