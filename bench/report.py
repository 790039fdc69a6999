"""Turn pytest-benchmark JSON files from bench/ into the README's markdown tables.

    python bench/report.py bench/results/all.json [more.json ...]          # print the tables
    python bench/report.py --readme README.md bench/results/all.json       # rewrite them in place

With ``--readme`` each table replaces the text between ``<!-- bench:KIND -->`` and
``<!-- /bench:KIND -->`` in the README, so the published figures are the suite's output.
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


def dutta(benchmarks: list[dict]) -> list[str]:
    rows = ["| lr policy | lr | workers | delay | updates | staleness mean / max | final loss (optimum) | lr used mean / min |",
            "|---|---:|---:|---|---:|---:|---:|---:|"]
    for b in benchmarks:
        e = b.get("extra_info", {})
        if e.get("kind") != "dutta":
            continue
        rows.append(f"| {e['policy']} | {e['lr']} | {e['workers']} | {e['delay']} | {e['updates']} | "
                    f"{e['staleness_mean']:.1f} / {e['staleness_max']} | {e['final_loss']:.4g} "
                    f"({e['optimum']:.4g}){' diverged' if e['diverged'] else ''} | "
                    f"{e['lr_mean']:.3g} / {e['lr_min']:.3g} |")
    return rows


def leaders(benchmarks: list[dict]) -> list[str]:
    rows = ["| algo | rule, lr | updates in 20 s | samples/s | final eval loss | mean-of-replicas loss | leader changes | pulls |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for b in benchmarks:
        e = b.get("extra_info", {})
        if e.get("kind") != "leaders":
            continue
        avg = "" if e.get("loss_average") is None else f"{e['loss_average']:.4f}"
        rows.append(f"| {e['algo']} | {e['rule']}, {e['lr']:g} | {e['updates']} | {e['samples_per_s']:,.0f} | "
                    f"{e['final_loss']:.4f} | {avg} | {e.get('leader_changes') or ''} | "
                    f"{e.get('pulls') or ''} |")
    return rows


TABLES = {"scaling": scaling, "theory": theory, "dutta": dutta, "leaders": leaders}


def update_readme(readme: str, paths: list[str]) -> None:
    import re
    benchmarks, machines = [], []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        benchmarks += data["benchmarks"]
        machines.append(f"{machine(data)} ({data.get('datetime', '')[:10]})")
    text = open(readme, encoding="utf-8").read()
    for kind, fn in TABLES.items():
        rows = fn(benchmarks)
        if len(rows) <= 2:
            continue
        block = "\n".join(rows) + f"\n\n_Measured on {machines[0]}._"
        text, n = re.subn(rf"(<!-- bench:{kind} -->\n)(.*?\n)?(<!-- /bench:{kind} -->)",
                          lambda m: m.group(1) + block + "\n" + m.group(3), text, flags=re.S)
        if n:
            print(f"updated the {kind} table")
    with open(readme, "w", encoding="utf-8") as f:
        f.write(text)


def main(paths: list[str]) -> None:
    if paths and paths[0] == "--readme":
        update_readme(paths[1], paths[2:])
        return
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        print(f"Measured on: {machine(data)} ({data.get('datetime', '')[:10]})\n")
        for table in (scaling, theory, dutta, leaders):
            rows = table(data["benchmarks"])
            if rows and len(rows) > 2:
                print("\n".join(rows))
                print()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
