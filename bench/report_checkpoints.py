"""The docs table of bench/test_checkpoint_cost.py: what periodic checkpoints of a 2 GB arena cost
a running job, per protocol family."""
from __future__ import annotations

from report_nodes import of_kind


def _mb(n: float) -> str:
    return f"{n / 2 ** 20:,.0f} MiB"


def checkpoint_cost(benchmarks: list[dict]) -> list[str]:
    found = {(e["algo"], e["workers"]): e for e in of_kind(benchmarks, "checkpoint_cost")}
    if not found:
        return []
    first = next(iter(found.values()))
    rows = [f"| {first['parameters'] / 1e6:,.0f}M parameters (a {first['parameters'] * 16 / 1e9:.1f} GB "
            f"checkpoint), a checkpoint every {first['every_s']:g} s of {first['run_s']:g} s runs | "
            f"workers | mode | samples/s with / without: median (min - max; {first['rounds']} rounds) | "
            f"pause per checkpoint (server: the applier alone): median (max) | write: median (max) | the writer's CPU "
            f"per checkpoint | supervisor's extra memory |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    labels = {"apam": "apam (direct, lock-free)", "sync": "sync AMSGrad (server)"}
    for (algo, workers), e in found.items():
        cpu = e.get("writer_cpu_median_s")
        rows.append(f"| {labels.get(algo, algo)} | {workers} | {', '.join(e['modes'])} | "
                    f"{e['ratio_median']:.3f} ({e['ratio_min']:.3f} - {e['ratio_max']:.3f}) | "
                    f"{e['pause_median_s']:.2f} s ({e['pause_max_s']:.2f} s) | {e['write_median_s']:.1f} s "
                    f"({e['write_max_s']:.1f} s) | {'-' if cpu is None else f'{cpu:.1f} s'} | "
                    f"{_mb(e['extra_memory_max'])} |")
    rows += ["", "Goal: a checkpoint every 30 s of a 2 GB arena costs under 2% of samples/s "
             "(with / without >= 0.98): " + ", ".join(
                 f"{algo} with {workers} worker{'s' if workers > 1 else ''} {'met' if e['ratio_median'] >= 0.98 else 'not met'} at "
                 f"the median" for (algo, workers), e in found.items()) + "."]
    if first.get("quick"):
        rows += ["", "**Smoke run (SHMOPT_BENCH_QUICK=1: a small model, 1 round): not the measurement.**"]
    return rows


TABLES = {"checkpoint_cost": checkpoint_cost}
