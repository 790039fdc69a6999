"""The docs tables of bench/test_data_sources.py: mapped data against the same rows in memory, and
the time to the first step of a million-item dataset read per batch or up front."""
from __future__ import annotations

from report_nodes import of_kind

GIB = 2 ** 30


def _mb(n: float) -> str:
    return f"{n / 2 ** 20:,.0f} MiB"


def mapped_data(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "mapped_data")
    if not found:
        return []
    e = found[-1]
    size = e["file_bytes"]
    rows = [f"| hogwild, {e['workers']} workers, batch 64, linear model on 3,072-byte uint8 rows, {e['run_s']:g} s "
            f"runs | samples/s: median (min - max; {e['rounds']} rounds) | arena (/dev/shm) | anonymous "
            f"memory per worker: median (max) |", "|---|---:|---:|---:|"]
    for key, label in (("mapped_small", f"mapped file, {size['0.5GiB'] / GIB:.1f} GiB"),
                       ("mapped", f"mapped file, {size['4GiB'] / GIB:.1f} GiB"),
                       ("in_memory", f"the same {size['4GiB'] / GIB:.1f} GiB in memory (copied into the arena)")):
        r = e[key]
        rows.append(f"| {label} | {r['samples_per_s_median']:,.0f} ({r['samples_per_s_min']:,.0f} - "
                    f"{r['samples_per_s_max']:,.0f}) | {_mb(r['arena_bytes'])} | {_mb(r['anonymous_median'])} "
                    f"({_mb(r['anonymous_max'])}) |")
    grow = e["mapped"]["anonymous_median"] - e["mapped_small"]["anonymous_median"]
    rows += ["", f"Mapped / in memory, samples/s per round: {e['ratio_median']:.2f}x ({e['ratio_min']:.2f} - "
             f"{e['ratio_max']:.2f}); goal within 10%: {'met' if e['ratio_min'] >= 0.9 else 'not met'}. A worker's "
             f"anonymous memory at the largest file is {100 * e['anonymous_share_of_file']:.1f}% of the file "
             f"(goal under 5%: {'met' if e['anonymous_share_of_file'] < 0.05 else 'not met'}); it is the torch "
             f"runtime, and it grew by {_mb(grow)} from the small file to the large one."]
    if e.get("quick"):
        rows += ["", "**Smoke run (SHMOPT_BENCH_QUICK=1: small files, 1 round): not the measurement.**"]
    return rows


def first_step(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "first_step")
    if not found:
        return []
    e = found[-1]
    up = e["up_front"]
    rows = [f"| {e['items']:,}-item map-style dataset, {e['workers']} workers | problem built | "
            f"to the first update |", "|---|---:|---:|",
            f"| read per batch (the default from 50,000 items) | "
            f"{1000 * max(r['problem_s'] for r in e['per_batch_runs']):.2f} ms "
            f"| {e['per_batch_median']:.2f} s ({e['per_batch_min']:.2f} - {e['per_batch_max']:.2f}; "
            f"{len(e['per_batch_runs'])} runs) |",
            f"| read up front (`eager=True`, as every dataset was before) | {up['problem_s']:.1f} s | "
            f"{up['first_step_s']:.1f} s (1 run) |",
            "", f"Goal under 2 s: {'met' if e['per_batch_max'] < 2 else 'not met'}. The forkserver was already "
            f"running; the first run of a fresh interpreter adds its start (about 1.7 s here, the start-up "
            f"table above)."]
    if e.get("quick"):
        rows += ["", "**Smoke run (SHMOPT_BENCH_QUICK=1: 100,000 items): not the measurement.**"]
    return rows


TABLES = {"mapped_data": mapped_data, "first_step": first_step}
