"""The docs tables of bench/test_movielens.py (movielens-mf against surprise's SVD and torch's
SparseAdam; shmopt's table rules), shown on docs/movielens.md."""
from __future__ import annotations

from report_nodes import of_kind

NAMES = {"svd": "scikit-surprise SVD (Cython SGD, 1 process)",
         "torch": "torch SparseAdam + Adam for mu (1 process)",
         "shmopt1": "shmopt hogwild, 1 worker", "shmopt2": "shmopt hogwild, 2 workers"}
SMOKE = "**Smoke run (SHMOPT_BENCH_QUICK=1: short runs, 1 round): not the measurement.**"


def _spread(r: dict, fmt: str = ".4f", unit: str = "") -> str:
    """``median (min - max)`` of a {median, min, max} record."""
    return f"{r['median']:{fmt}}{unit} ({r['min']:{fmt}} - {r['max']:{fmt}})"


def _x(r: dict) -> str:
    return _spread(r, ".2f", "x")


def _reached(c: dict) -> str:
    """Training time and ratings seen to the target (median of the runs that reached it)."""
    if c["time_to_target_s"] is None:
        return f"not reached ({c['reached']}) | -"
    return f"{c['time_to_target_s']:.2f} s ({c['reached']}) | {c['samples_to_target']:,.0f}"


def movielens(benchmarks: list[dict]) -> list[str]:
    e = next(iter(of_kind(benchmarks, "movielens")), None)
    if e is None:
        return []
    rows = [f"| movielens-mf, dim 32, batch {e['batch_size']}, {e['seconds']:g} s runs; target: SVD's "
            f"RMSE {e['target']:.4f} | start-up | training time to target | ratings seen to target | "
            f"samples/s (per worker) | final held-out RMSE: median (min - max) |",
            "|---|---:|---:|---:|---:|---:|"]
    for case, name in NAMES.items():
        c = e["cases"][case]
        per = "" if case != "shmopt2" else f" ({c['samples_per_s_per_worker']:,.0f})"
        rows.append(f"| {name} | {c['startup_s']:.2f} s | {_reached(c)} | {c['samples_per_s']:,.0f}{per} | "
                    f"{_spread(c['rmse'])} |")
    svd, two = e["cases"]["svd"], e["cases"]["shmopt2"]
    ttt = (f"{two['time_to_target_s']:.2f} s / {svd['time_to_target_s']:.2f} s = "
           f"{two['time_to_target_s'] / svd['time_to_target_s']:.2f}x") if two["time_to_target_s"] else "not reached"
    met = "yes" if two["time_to_target_s"] and two["time_to_target_s"] < svd["time_to_target_s"] else "no"
    sp = e["speedup_2_over_1"]
    gap = two["rmse"]["median"] - svd["rmse"]["median"]
    spread = lambda c: c["rmse"]["max"] - c["rmse"]["min"]
    load = (f", other load {e['other_cores_max']:.2f} cores at most, shmopt's workers used "
            f"{e['worker_cores']['shmopt1']:.2f} / {e['worker_cores']['shmopt2']:.2f}" if "worker_cores" in e else "")
    rows += ["", f"| goal ({e['rounds']} round{'s' if e['rounds'] > 1 else ''}, {e['cores']} cores{load}) | "
             "measured: median (min - max) | goal | met |", "|---|---:|---:|---|",
             f"| shmopt 2 workers' training time to SVD's RMSE / SVD's fit time | {ttt} | < 1x | {met} |",
             f"| samples/s per worker, shmopt 2 workers / torch SparseAdam | {_x(e['per_worker_vs_torch'])} | | |",
             f"| samples/s, shmopt 1 worker / torch SparseAdam | {_x(e['one_worker_vs_torch'])} | | |",
             f"| surprise's ratings/s / shmopt's samples/s per worker | {_x(e['svd_vs_per_worker'])} | | |",
             f"| speed-up, 2 workers / 1 worker | {_x(sp)} | >= {e['goal_speedup']} | "
             + ("yes" if sp["median"] >= e["goal_speedup"] else "no") + " |",
             f"| final RMSE, shmopt 2 workers - SVD (run-to-run spread: shmopt {spread(two):.4f}, SVD "
             f"{spread(svd):.4f}) | {gap:+.4f} | <= the larger spread | "
             + ("yes" if round(gap, 4) <= round(max(spread(two), spread(svd)), 4) else "no") + " |"]
    return rows + (["", SMOKE] if e["quick"] else [])


def movielens_rules(benchmarks: list[dict]) -> list[str]:
    e = next(iter(of_kind(benchmarks, "movielens_rules")), None)
    if e is None:
        return []
    rows = [f"| `--table-rule`, `--lr`, batch (hogwild, 2 workers, {e['seconds']:g} s) | samples/s | training time "
            f"to {e['target']:.4f} | ratings seen to {e['target']:.4f} | final held-out RMSE: median (min - max) |",
            "|---|---:|---:|---:|---:|"]
    for r in e["rules"]:
        rows.append(f"| `{r['rule']}`, {r['lr']:g}, {r['batch_size']} | {r['samples_per_s']:,.0f} | {_reached(r)} | "
                    f"{_spread(r['rmse'])} |")
    return rows + (["", SMOKE] if e["quick"] else [])


TABLES = {"movielens": movielens, "movielens_rules": movielens_rules}
