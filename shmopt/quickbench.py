"""``shmopt bench``: a quick benchmark of this machine (under a minute with the defaults).

It measures what decides whether shmopt pays off here:

* **scaling** - samples/s of short training runs (``seconds`` each, after start-up) for each
  problem, algorithm and worker count (default 1, 2 and the number of cores), and the speed-up
  over the smallest worker count of the same problem and algorithm;
* **kernel** - one AMSGrad update of 1M float32 parameters: shmopt's rule on buffers in shared
  memory against ``torch.optim.Adam(amsgrad=True, fused=True)`` and the for-loop
  ``torch.optim.Adam(amsgrad=True, foreach=False)`` on private tensors, interleaved, medians.

The first run of a process also starts shmopt's forkserver (importing torch once); that cost is
measured separately (``forkserver_start_s``) and kept out of the figures. On a busy machine the
figures move: the full, interleaved benchmark suite is in ``bench/`` of the repository.

Python: ``run_quick_bench(...)`` returns a JSON-serialisable dict, ``format_table(result)``
renders it. Command line: :data:`bench_command` (``shmopt bench --seconds 2 --workers 1,2``).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import click

from . import checks
from .errors import ConfigError, ShmoptError, WorkerError

__all__ = ["run_quick_bench", "format_table", "bench_command", "default_workers", "measure_kernel"]

DEFAULT_PROBLEMS = ("mlp", "logreg")
DEFAULT_ALGOS = ("apam", "hogwild")
KERNEL_PARAMS = 1_000_000
KERNEL_LR = 1e-3


def default_workers(cores: int | None = None) -> list[int]:
    """1, 2 and the number of cores (sorted, without repeats)."""
    cores = cores or os.cpu_count() or 1
    return sorted({1, 2, cores})


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "?"


def _machine() -> dict[str, Any]:
    import torch

    from . import __version__
    from .rules import fused_adam_available
    return {"cores": os.cpu_count(), "cpu": _cpu_model(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "shmopt": __version__, "fused_amsgrad": fused_adam_available()}


def _check_settings(seconds: float, workers: Sequence[int], problems: Sequence[str],
                    algos: Sequence[str]) -> None:
    checks.number("seconds", seconds, gt=0)
    if not workers:
        raise ConfigError("invalid workers=[]: give at least one worker count")
    for w in workers:
        checks.integer("workers entry", w, 1, 256)
    if not problems:
        raise ConfigError("invalid problems=(): give at least one problem")
    if not algos:
        raise ConfigError("invalid algos=(): give at least one algorithm")
    from .strategies import get_algorithm
    for a in algos:
        get_algorithm(a)                            # ConfigError naming the accepted ones


# --------------------------------------------------------------------------- kernel
def measure_kernel(n: int = KERNEL_PARAMS, rounds: int = 5, block_s: float = 0.05) -> dict[str, Any]:
    """Time one AMSGrad update of ``n`` parameters three ways, interleaved (the order rotates),
    with the thread count of one worker; medians of per-call times and of per-round ratios."""
    import torch

    from .memory import Arena, Layout
    from .plan import default_threads
    from .rules import AMSGrad, fused_adam_available

    threads = default_threads(1)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    arena = Arena.create(Layout.build([(s, (n,), "float32") for s in ("x", "g", "m", "v", "vmax")]))
    try:
        gen = torch.Generator().manual_seed(0)
        x0, g0 = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
        x, g = arena.tensor("x"), arena.tensor("g")
        x.copy_(x0)
        g.copy_(g0)
        state = {s: arena.tensor(s).zero_() for s in ("m", "v", "vmax")}
        rule = AMSGrad(lr=KERNEL_LR)
        step = [0]

        def shared() -> None:
            step[0] += 1
            rule.update(x, g, state, step=step[0])

        fns: dict[str, Callable[[], Any]] = {"shmopt_shared": shared}
        fused = fused_adam_available()
        for name, kw in (("torch_fused", {"fused": True}), ("torch_forloop", {"foreach": False})):
            if name == "torch_fused" and not fused:
                continue
            p = torch.nn.Parameter(x0.clone())
            p.grad = g0.clone()
            fns[name] = torch.optim.Adam([p], lr=KERNEL_LR, amsgrad=True, **kw).step

        calls = {}
        for name, fn in fns.items():             # calibrate: about block_s per timed block
            fn()
            t = time.perf_counter()
            fn()
            calls[name] = max(2, int(block_s / max(time.perf_counter() - t, 1e-6)))
        times: dict[str, list[float]] = {k: [] for k in fns}
        order = list(fns)
        for _ in range(rounds):
            for name in order:
                t = time.perf_counter()
                for _ in range(calls[name]):
                    fns[name]()
                times[name].append((time.perf_counter() - t) / calls[name])
            order.append(order.pop(0))
        ok = bool(torch.isfinite(x).all())
    finally:
        torch.set_num_threads(old_threads)
        arena.close()
    if not ok:
        raise ShmoptError("kernel benchmark: the update produced non-finite parameters")
    out: dict[str, Any] = {"params": n, "threads": threads, "rounds": rounds, "fused_available": fused}
    for name, ts in times.items():
        out[f"{name}_ms"] = statistics.median(ts) * 1e3
    for name in fns:
        if name != "shmopt_shared":
            out[f"ratio_vs_{name[len('torch_'):]}"] = statistics.median(
                a / b for a, b in zip(times["shmopt_shared"], times[name]))
    return out


# --------------------------------------------------------------------------- scaling
def _measure_run(problem, algo: str, workers: int, seconds: float) -> dict[str, Any]:
    from .api import train
    st = train(problem, algo=algo, workers=workers, time_limit=seconds,
               eval_interval=max(seconds, 0.5)).stats
    return {"samples_per_s": st["samples_per_s"], "startup_s": st["startup_s"],
            "wall_s": st["wall_s"], "updates": st["updates"],
            "staleness_mean": st["staleness_mean"]}


def run_quick_bench(seconds: float = 2.0, workers: list[int] | None = None,
                    problems: Iterable[str] = DEFAULT_PROBLEMS, algos: Iterable[str] = DEFAULT_ALGOS,
                    progress: Callable[[str], None] | None = None, *,
                    kernel_params: int = KERNEL_PARAMS) -> dict[str, Any]:
    """Run the quick benchmark; return a JSON-serialisable dict.

    ``workers``: worker counts (default :func:`default_workers`); ``problems``: built-in names
    or anything ``shmopt.load_problem`` accepts; ``algos``: algorithm names. ``progress`` is
    called with one line of text per finished measurement. Everything is validated before any
    process starts (ConfigError / ProblemError); a failing worker raises WorkerError.
    ``kernel_params=0`` skips the kernel measurement.
    """
    from .api import train
    from .problems import load_problem

    problems, algos = tuple(problems), tuple(algos)
    workers = sorted(set(default_workers() if workers is None else workers))
    _check_settings(seconds, workers, problems, algos)
    checks.integer("kernel_params", kernel_params, 0)
    say = progress or (lambda line: None)
    t_start = time.perf_counter()
    loaded = {name: load_problem(name) for name in problems}     # ProblemError before any run

    first = loaded[problems[0]]
    t = time.perf_counter()
    train(first, algo=algos[0], workers=1, steps=5)      # starts the forkserver (imports torch)
    forkserver_start_s = time.perf_counter() - t
    say(f"warm-up (forkserver start): {forkserver_start_s:.2f} s")

    rows: list[dict[str, Any]] = []
    for pname, prob in loaded.items():
        for algo in algos:
            base = None
            for w in workers:
                r = _measure_run(prob, algo, w, seconds)
                base = r["samples_per_s"] if base is None else base
                row = {"problem": pname, "algo": algo, "workers": w, **r,
                       "speedup": r["samples_per_s"] / base if base else None,
                       "speedup_vs_workers": workers[0]}
                rows.append(row)
                say(f"{pname} {algo} {w} worker{'s' if w > 1 else ''}: "
                    f"{r['samples_per_s']:,.0f} samples/s ({row['speedup']:.2f}x of {workers[0]}), "
                    f"start-up {r['startup_s']:.2f} s")
    kernel = None
    if kernel_params:
        kernel = measure_kernel(kernel_params)
        msg = f"AMSGrad update, {kernel_params:,} parameters: shmopt {kernel['shmopt_shared_ms']:.3f} ms"
        if "ratio_vs_fused" in kernel:
            msg += f", torch fused {kernel['torch_fused_ms']:.3f} ms ({kernel['ratio_vs_fused']:.2f}x)"
        say(msg + f", torch for-loop {kernel['torch_forloop_ms']:.3f} ms")
    return {"machine": _machine(),
            "settings": {"seconds": seconds, "workers": workers, "problems": list(problems),
                         "algos": list(algos), "kernel_params": kernel_params},
            "forkserver_start_s": forkserver_start_s, "scaling": rows, "kernel": kernel,
            "total_s": time.perf_counter() - t_start}


# --------------------------------------------------------------------------- table
def format_table(result: dict[str, Any]) -> str:
    """The result of :func:`run_quick_bench` as plain-text tables."""
    m, s = result["machine"], result["settings"]
    lines = [f"shmopt bench: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
             f"fused AMSGrad {'yes' if m['fused_amsgrad'] else 'no'}; "
             f"{s['seconds']:g} s of training per run",
             ""]
    head = ("problem", "algo", "workers", "samples/s", "speed-up", "start-up", "staleness")
    body = [(r["problem"], r["algo"], str(r["workers"]), f"{r['samples_per_s']:,.0f}",
             "" if r["speedup"] is None else f"{r['speedup']:.2f}x",
             f"{r['startup_s']:.2f} s", f"{r['staleness_mean']:.2f}") for r in result["scaling"]]
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    left = {0, 1}

    def fmt(row) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    lines += [fmt(head), "  ".join("-" * w for w in widths), *(fmt(r) for r in body)]
    lines.append(f"(speed-up: samples/s over {s['workers'][0]} worker{'s' if s['workers'][0] > 1 else ''}; "
                 f"first forkserver start {result['forkserver_start_s']:.2f} s, not included)")
    k = result.get("kernel")
    if k:
        lines += ["", f"AMSGrad update of {k['params']:,} float32 parameters, {k['threads']} thread(s), "
                  f"median of {k['rounds']} interleaved rounds:"]
        impl = [("shmopt rule, shared memory", "shmopt_shared_ms", None),
                ("torch.optim.Adam fused, private", "torch_fused_ms", "ratio_vs_fused"),
                ("torch.optim.Adam for-loop, private", "torch_forloop_ms", "ratio_vs_forloop")]
        for label, key, ratio in impl:
            if key in k:
                extra = f"   shmopt / this = {k[ratio]:.2f}x" if ratio else ""
                lines.append(f"  {label:<36} {k[key]:8.3f} ms{extra}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line
def _parse_ints(value: str | None, name: str) -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 1,2",
                                 param_hint=name) from None
    if not out or any(w < 1 for w in out):
        raise click.BadParameter(f"{value!r}: expected integers >= 1, e.g. 1,2", param_hint=name)
    return out


def _parse_names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command("bench")
@click.option("--seconds", type=float, default=2.0, show_default=True,
              help="Seconds of training per measurement (start-up excluded).")
@click.option("--workers", "-w", "workers_opt", metavar="N,N,...",
              help="Worker counts to measure [default: 1,2,cores].")
@click.option("--problems", default=",".join(DEFAULT_PROBLEMS), show_default=True, metavar="P,P,...",
              help="Problems (built-ins, .py files or module:function).")
@click.option("--algos", default=",".join(DEFAULT_ALGOS), show_default=True, metavar="A,A,...",
              help="Algorithms (see `shmopt algos`).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object (no progress).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr (the table is still printed).")
def bench_command(seconds: float, workers_opt: str | None, problems: str, algos: str, as_json: bool,
                  quiet: bool) -> None:
    """Quick benchmark of this machine: samples/s for 1, 2 and all cores (apam and hogwild on
    mlp and logreg) and the shared AMSGrad kernel against torch's; under a minute by default.
    One line per finished measurement goes to stderr."""
    workers = _parse_ints(workers_opt, "--workers")
    progress = None if (quiet or as_json) else (lambda line: click.echo(line, err=True))
    try:
        result = run_quick_bench(seconds, workers, _parse_names(problems), _parse_names(algos),
                                 progress=progress)
    except ConfigError as e:          # ProblemError and ShmSpaceError included
        raise click.UsageError(str(e)) from None
    except WorkerError as e:
        if e.traceback:
            click.echo(e.traceback.rstrip(), err=True)
        raise click.ClickException(str(e)) from None
    except ShmoptError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(format_table(result))
    sys.stdout.flush()
