"""The docs tables of bench/test_real_data.py (the seed papers' experiments on real images)."""
from __future__ import annotations


def of_kind(benchmarks: list[dict], kind: str) -> list[dict]:
    return [b["extra_info"] for b in benchmarks if b.get("extra_info", {}).get("kind") == kind]


def _ttt(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def real_apam(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "real_apam")
    if not found:
        return []
    e = found[0]
    rows = [f"| LeNet5 on {e['problem']}, {e['seconds']:g} s | workers | delay | updates | test accuracy "
            f"(final / best) | time to {e['target']:g} | APAM's speed-up to {e['target']:g} |",
            "|---|---:|---|---:|---:|---:|---:|"]
    for case in e["cases"]:
        by = {r["label"]: r for r in case["runs"]}
        a, s = by["apam"]["time_to_accuracy_s"], by["sync"]["time_to_accuracy_s"]
        speed = f"{s / a:.2f}x" if a and s else (f"> {e['seconds'] / a:.2f}x" if a else "-")
        for name in ("apam", "sync"):
            r = by[name]
            rows.append(f"| {name} | {case['workers']} | {case['delay']} | {r['updates']:,} | "
                        f"{_acc(r['final_accuracy'])} / {_acc(r['best_accuracy'])} | "
                        f"{_ttt(r['time_to_accuracy_s'])} | {speed if name == 'apam' else ''} |")
    return rows


def _runs_table(e: dict, what: str) -> list[str]:
    rows = [f"| {what} | updates | samples/s | staleness | test accuracy (final / best) | time to "
            f"{e['target']:g} |", "|---|---:|---:|---:|---:|---:|"]
    for r in e["runs"]:
        rows.append(f"| {r['label']} | {r['updates']:,} | {r['samples_per_s']:,.0f} | {r['staleness_mean']:.2f} "
                    f"| {_acc(r['final_accuracy'])} / {_acc(r['best_accuracy'])} | "
                    f"{_ttt(r['time_to_accuracy_s'])} |")
    return rows


def real_leaders(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "real_leaders")
    return _runs_table(found[0], f"small CNN on {found[0]['problem']}, 4 workers, "
                                 f"{found[0]['seconds']:g} s") if found else []


def real_dutta(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "real_dutta")
    return _runs_table(found[0], f"LeNet5 on {found[0]['problem']}, sgd, 4 workers, delay "
                                 f"{found[0]['delay']}, {found[0]['seconds']:g} s") if found else []


def real_lenet5(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "real_lenet5")
    if not found:
        return []
    e = found[0]
    names = {"apam1": "shmopt apam, 1 worker", "apam2": "shmopt apam, 2 workers",
             "hog2": "mnist_hogwild pattern, 2 processes"}
    rows = [f"| LeNet5 on {e['problem']}, 1 thread each, {e['seconds']:g} s, median of {e['rounds']} | "
            f"samples/s | test accuracy at the end | time to {e['target']:g} |", "|---|---:|---:|---:|"]
    for k, name in names.items():
        rows.append(f"| {name} | {e['samples_per_s'][k]:,.0f} | {_acc(e['final_accuracy'][k])} | "
                    f"{_ttt(e['time_to_target'][k])} |")
    rows.append(f"| **2 workers / 1 worker** (goal >= 1.85) | **{e['speedup_2_over_1']:.2f}x** | | |")
    rows.append(f"| **apam 2 workers / mnist_hogwild 2** (goal >= 1.2) | **{e['apam2_vs_hogwild2']:.2f}x** | | |")
    return rows


REAL_TABLES = {"real_apam": real_apam, "real_leaders": real_leaders, "real_dutta": real_dutta,
               "real_lenet5": real_lenet5}
