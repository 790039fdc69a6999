"""``shmopt advise PROBLEM -w P``: which K-variant and K to run on this machine, and why.

1. **Calibration**: time single mini-batches of the problem's model in this process with one
   torch thread (draw a batch, forward, backward: what a learner computes per mini-batch),
   bounded by ``calibration_s`` seconds or ``calibration_batches`` batches, whichever comes
   first, after up to 3 warm-up batches.
2. **Fit**: a shifted exponential, C ~ min + Exp(mean − min)
   (:func:`~shmopt.strategies.k_ranking.fit_shifted_exponential`).
3. **Prediction**: C plus the ``--delay`` distribution, as the runtime theory's time per
   mini-batch X; E[T] per update of every K-variant with K = 1..P (closed forms, else the seeded
   simulation) and the expected staleness; ranked by E[T]
   (:func:`~shmopt.strategies.k_ranking.rank_variants`, where the formulas are).

No worker process and no shared memory are involved; every option is checked before the
problem is built. Python: :func:`advise` returns a JSON-serialisable dict.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import click

from . import checks
from .problems import Problem, load_problem, parse_options
from .strategies.algorithms import ALGORITHMS
from .strategies.delays import DELAY_FORMS, parse_delay
from .strategies.k_ranking import (
    check_max_staleness,
    check_workers,
    fit_shifted_exponential,
    rank_variants,
    time_model,
)
from .strategies.schedules import recommend as recommend_schedule

__all__ = ["advise", "calibrate", "advise_command", "format_advice"]

WARMUP_BATCHES = 3


def _check(calibration_s: object, calibration_batches: object, iterations: object,
           seed: object) -> None:
    checks.number("calibration_s", calibration_s, gt=0, le=60)
    checks.integer("calibration_batches", calibration_batches, 2, 100_000)
    checks.integer("iterations", iterations, 100, 10**7)
    checks.integer("seed", seed, 0)


def calibrate(problem: Problem, calibration_s: float = 2.0, calibration_batches: int = 200,
              seed: int = 0) -> tuple[list[float], float]:
    """Compute times (seconds) of single mini-batches of ``problem`` with 1 torch thread, and the
    wall time the calibration took. The torch thread count and RNG state are restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: list[float] = []
    t_start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = problem.model()
            gen = torch.Generator().manual_seed(seed)
            n, b, rows = problem.num_train, problem.batch_size, problem.rows
            deadline = t_start + calibration_s
            i = 0
            while len(times) < calibration_batches:
                t0 = time.perf_counter()
                batch = rows.first(b) if n is None else rows.take(torch.randint(n, (b,), generator=gen))
                model.zero_grad(set_to_none=True)   # a sparse gradient must not accumulate
                loss = problem.loss(model, batch)
                loss.backward()
                float(loss.detach())
                t1 = time.perf_counter()
                warm = i < WARMUP_BATCHES and t1 < t_start + 0.25 * calibration_s
                if not warm:
                    times.append(t1 - t0)
                i += 1
                if t1 >= deadline and len(times) >= 2:
                    break
    finally:
        torch.set_num_threads(threads)
    return times, time.perf_counter() - t_start


def advise(problem: str | Problem, workers: int, delay: str = "none", *,
           options: dict[str, Any] | None = None, max_staleness: float | None = None,
           calibration_s: float = 2.0, calibration_batches: int = 200, iterations: int = 20_000,
           seed: int = 0) -> dict[str, Any]:
    """Calibrate, fit, predict and rank (module doc). Returns a JSON-serialisable dict with
    ``calibration``, ``fit``, ``time_model``, ``rows`` (ranked), ``recommended`` and ``reason``."""
    p = check_workers(workers)
    d = parse_delay(delay)
    check_max_staleness(max_staleness, p)
    _check(calibration_s, calibration_batches, iterations, seed)
    prob = problem if isinstance(problem, Problem) else load_problem(problem, **(options or {}))
    samples, took = calibrate(prob, calibration_s, calibration_batches, seed)
    fit = fit_shifted_exponential(samples)
    model = time_model(fit, d)
    adv = rank_variants(model, p, max_staleness, iterations=iterations, seed=seed)
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {
        "problem": prob.name, "workers": p, "delay": d.spec, "cores": cores,
        "calibration": {"batches": fit.n, "batch_size": prob.batch_size, "seconds": took,
                        "threads": 1},
        "fit": fit.to_dict(), **adv.to_dict()}
    out["notes"] = ([f"{p} workers on {cores} cores: the compute time measured alone will grow "
                     "when the workers share the cores"] if p > cores else [])
    out["tables"] = table_notes(prob, p, out["notes"])
    out["schedule"] = recommend_schedule(ALGORITHMS[out["recommended"]["algo"]].rule)
    return out


def table_notes(prob: Problem, workers: int, notes: list[str]) -> list[dict[str, Any]]:
    """The problem's tables (parameters with sparse gradients), with what they cost each family;
    the advice for a model with tables is added to ``notes``."""
    prob.validate()                            # finds the tables (the first batch's sparse gradients)
    tables = [{"name": name, "rows": shape[0], "dim": math.prod(shape[1:]), "lookups_per_batch": k,
               "bytes": 4 * math.prod(shape)} for name, shape, k in prob.sparse_parameters]
    if tables:
        mb = sum(t["bytes"] for t in tables) / 2**20
        touched = sum(t["lookups_per_batch"] * t["dim"] for t in tables)
        notes.append(f"{len(tables)} table(s) of {mb:,.1f} MiB with sparse gradients: a mini-batch "
                     f"touches at most {touched:,} of their values, and every family above updates "
                     f"only those (docs/sparse.md); the replica methods (lsgd, easgd, local-sgd) "
                     f"would hold {workers} copies ({workers * mb:,.1f} MiB in /dev/shm) and move "
                     f"whole tables at every coupling")
    return tables


def _ms(t: float | None) -> str:
    return "-" if t is None else f"{1e3 * t:.3f} ms"


def format_advice(a: dict[str, Any]) -> str:
    """The human-readable report of :func:`advise`'s dict."""
    f, c, m = a["fit"], a["calibration"], a["time_model"]
    lines = [f"calibration: {a['problem']}, {c['batches']} mini-batches of {c['batch_size']} in "
             f"{c['seconds']:.2f} s, 1 thread: min {_ms(f['shift'])}, median {_ms(f['median'])}, "
             f"mean {_ms(f['mean'])}, p90 {_ms(f['p90'])}",
             f"fit: compute ~ {_ms(f['shift'])} + Exp(mean {_ms(f['scale'])}) (shifted exponential: "
             f"shift = min, scale = mean - min; sample std {_ms(f['std'])}"
             + (", a heavier tail than exponential" if f["std"] > 2 * f["scale"] else "") + ")",
             f"time per mini-batch: compute + delay {a['delay']} ~ {m['delay']}"
             + (f" + {m['compute']:.6g} s" if m["compute"] else "") + f" ({m['how']})",
             f"check any row: shmopt theory --algo ALGO --k K -w {a['workers']} --delay {m['delay']}"
             + (f" --compute {m['compute']:.6g}" if m["compute"] else ""),
             "",
             f"{'rank':>4}  {'algorithm':<14} {'K':>3}  {'E[T]/update':>12}  {'updates/s':>10}  "
             f"{'vs sync':>8}  {'staleness':>9}  method"]
    for i, r in enumerate(a["rows"], 1):
        mark = " *" if (r["algo"], r["k"]) == (a["recommended"]["algo"], a["recommended"]["k"]) else ""
        lines.append(f"{i:>4}  {r['algo']:<14} {r['k']:>3}  {_ms(r['time_per_update_s']):>12}  "
                     f"{r['updates_per_s']:>10.1f}  {r['speedup_vs_sync']:>7.2f}x  "
                     f"{r['staleness']:>9.2f}  {r['method']}{mark}")
    best = a["recommended"]
    lines += ["", f"recommended: {best['algo']} K={best['k']}  (shmopt run {a['problem']} --algo "
              f"{best['algo']} --k {best['k']} -w {a['workers']} --delay {a['delay']})",
              f"reason: {a['reason']}",
              f"ranking: by expected time per update E[T]; staleness bound {a['max_staleness']:g} "
              f"(--max-staleness)"]
    sched = a["schedule"]
    lines.append(f"schedule: --lr-schedule {sched['target']} to reach a target soonest; "
                 f"--lr-schedule {sched['budget']} for a fixed --steps budget ({sched['why']})")
    lines += [f"note: {n}" for n in a["notes"]]
    return "\n".join(lines)


@click.command("advise")
@click.argument("problem")
@click.option("--workers", "-w", type=int, required=True, help="Worker processes P.")
@click.option("--delay", default="none", show_default=True,
              help="Injected per-mini-batch delay: " + ", ".join(DELAY_FORMS) + ".")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Problem option, repeatable (e.g. -o n=10000).")
@click.option("--max-staleness", type=float, help="Recommend only variants whose expected "
              "staleness is at most this [default: P, every variant].")
@click.option("--calibration-s", type=float, default=2.0, show_default=True,
              help="Calibration time limit (seconds).")
@click.option("--calibration-batches", type=int, default=200, show_default=True,
              help="Calibration mini-batches at most.")
@click.option("--iterations", type=int, default=20_000, show_default=True,
              help="Updates per simulation, where no closed form exists.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def advise_command(problem: str, workers: int, delay: str, options: tuple[str, ...],
                   max_staleness: float | None, calibration_s: float, calibration_batches: int,
                   iterations: int, seed: int, as_json: bool) -> None:
    """Measure PROBLEM's compute time per mini-batch here, predict the time per update and the
    staleness of every K-variant and K for P workers (Dutta et al. 2018), rank them and recommend
    one."""
    a = advise(problem, workers, delay, options=parse_options(options), max_staleness=max_staleness,
               calibration_s=calibration_s, calibration_batches=calibration_batches,
               iterations=iterations, seed=seed)
    click.echo(json.dumps(a) if as_json else format_advice(a))
