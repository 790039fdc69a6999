"""The command line: ``shmopt run | algos | info | clean``.

Every user mistake is one line on stderr (``shmopt: error: ...``) and exit code 2, with no
process started and no shared memory left; a failed worker is reported with its rank, pid, exit
code or signal and traceback, exit code 1; Ctrl-C exits 130, SIGTERM 143, after a clean stop.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import click

from . import __version__
from .config import Config
from .errors import ConfigError, ShmoptError, WorkerError


class Terminated(BaseException):
    """SIGTERM, turned into an exception so the engine's ``finally`` blocks run."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess
    raise Terminated


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shmopt")
def cli() -> None:
    """shmopt: shared-memory, multi-process, Hogwild-style training for PyTorch."""


def _training_options(f):
    """The options `run` and `compare` share (they map 1:1 onto shmopt.Config)."""
    opts = [
        click.option("--workers", "-w", type=int, default=2, show_default=True, help="Worker processes."),
        click.option("--steps", type=int, help="Stop after this many updates [default: 5000 if no "
                     "other stop criterion is given]."),
        click.option("--time-limit", type=float, help="Stop after this many seconds of training."),
        click.option("--target-loss", type=float, help="Stop when the eval loss reaches this value."),
        click.option("--lr", type=float, help="Learning rate [default: the problem's suggestion]."),
        click.option("--batch-size", type=int, help="Mini-batch size per worker [default: the problem's]."),
        click.option("--rule", help="Update rule: sgd, adam or amsgrad [default: the algorithm's]."),
        click.option("--protocol", help="direct (lock-free, each worker applies) or server (one applier)."),
        click.option("--max-staleness", type=int, help="Drop gradients staler than this (APAM's bound)."),
        click.option("--momentum", type=float, default=0.0, help="SGD momentum."),
        click.option("--beta1", type=float, default=0.9, show_default=True),
        click.option("--beta2", type=float, default=0.999, show_default=True),
        click.option("--eps", type=float, default=1e-8, show_default=True),
        click.option("--weight-decay", type=float, default=0.0),
        click.option("--no-bias-correction", is_flag=True, help="The paper-exact APAM/AMSGrad rule."),
        click.option("--lr-policy", default="constant", show_default=True,
                     help="constant, staleness (lr/tau) or dutta (min(C/|w-w_read|^2, lr-max))."),
        click.option("--lr-c", type=float, help="dutta policy: C."),
        click.option("--lr-max", type=float, help="dutta policy: eta_max [default: --lr]."),
        click.option("--delay", default="none", show_default=True,
                     help="Injected per-mini-batch delay: none, exp:MEAN, shifted-exp:SHIFT:MEAN, "
                     "pareto:SCALE:ALPHA (seconds)."),
        click.option("--slow", multiple=True, metavar="RANK:FACTOR",
                     help="Make a worker slower: its delays times FACTOR (repeatable)."),
        click.option("--tau", type=int, default=10, show_default=True,
                     help="lsgd/easgd: local steps between pulls."),
        click.option("--lam", type=float, default=0.1, show_default=True,
                     help="lsgd: pull strength toward the (group) leader, in [0, 1]."),
        click.option("--groups", type=int, default=1, show_default=True,
                     help="lsgd: groups of workers, each with a local leader (multi-leader)."),
        click.option("--lam-global", type=float, default=0.1, show_default=True,
                     help="lsgd with --groups > 1: pull strength toward the global leader."),
        click.option("--tau-global", type=int, default=50, show_default=True,
                     help="lsgd with --groups > 1: local steps between global pulls."),
        click.option("--window", type=int, default=10, show_default=True,
                     help="lsgd: recent losses averaged to choose the leader."),
        click.option("--trigger", default="worker", show_default=True,
                     help="lsgd/easgd: pull on each worker's own step count (worker) or on the "
                     "total steps over all workers (total, the reference's)."),
        click.option("--beta", type=float, default=0.9, show_default=True,
                     help="easgd: moving rate, alpha = beta / workers."),
        click.option("--replica-init", default="same", show_default=True,
                     help="lsgd/easgd: same start for every replica, or independent (seed + rank)."),
        click.option("--read", default="snapshot", show_default=True,
                     help="snapshot (private copy per gradient) or inplace (read shared memory)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--threads", type=int, help="torch threads per worker [default: (cores-1) // workers]."),
        click.option("--pin", is_flag=True, help="Pin worker i to core i (psutil)."),
        click.option("--eval-interval", type=float, default=0.5, show_default=True,
                     help="Seconds between evaluations."),
        click.option("--eval-samples", type=int, default=8192, show_default=True),
        click.option("--start-method", default="forkserver", show_default=True, help="forkserver or spawn."),
        click.option("--heartbeat-timeout", type=float, default=120.0, show_default=True,
                     help="Seconds of silence after which a worker counts as hung."),
        click.option("--on-worker-failure", default="stop", show_default=True,
                     help="stop (everything, exit 1) or restart (respawn the rank; asynchronous "
                     "algorithms continue from the shared state)."),
        click.option("--max-restarts", type=int, default=3, show_default=True,
                     help="Restarts allowed per rank with --on-worker-failure restart."),
        click.option("--on-nonfinite", default="skip", show_default=True,
                     help="A NaN/Inf loss or gradient is never applied: skip (count it) or stop."),
        click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
                     help="Problem option, repeatable (e.g. -o n=10000)."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (last line)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _config(beta1: float, beta2: float, no_bias_correction: bool, **kw: Any) -> Config:
    return Config(betas=(beta1, beta2), bias_correction=not no_bias_correction, **kw)


@cli.command()
@click.argument("problem")
@click.option("--algo", default="apam", show_default=True, help="Algorithm (see `shmopt algos`).")
@click.option("--k", type=int, help="Server protocols: gradients averaged per update.")
@_training_options
@click.option("--log", type=click.Path(dir_okay=False, writable=True),
              help="Write the evaluation samples as JSON lines to this file.")
@click.option("--save", type=click.Path(dir_okay=False, writable=True),
              help="Save the trained model's state_dict (torch.save) to this file.")
@click.option("--checkpoint", help="Write the whole shared state to this file (atomically) when "
              "the run ends, also on Ctrl-C/SIGTERM, and every --checkpoint-every updates.")
@click.option("--checkpoint-every", type=int, help="Updates between checkpoints.")
@click.option("--resume", help="Continue from this checkpoint (same problem, algorithm, workers).")
def run(problem: str, options: tuple[str, ...], as_json: bool, quiet: bool, save: str | None,
        **kw: Any) -> None:
    """Train PROBLEM: a built-in (logreg, mlp, quadratic), a .py file with problem(), or
    module:function."""
    from .engine.supervisor import Engine
    from .problems import load_problem, parse_options

    config = _config(**kw)
    prob = load_problem(problem, **parse_options(options))
    show = not (quiet or as_json) and sys.stdout.isatty()
    bar = _Progress(config) if show else None
    engine = Engine(prob, config, source=problem, on_sample=bar.sample if bar else None)
    try:
        result = engine.run()
    finally:
        if bar:
            bar.close()
    if save:
        import torch
        torch.save(result.model.state_dict(), save)
    if as_json:
        click.echo(json.dumps(result.stats))
    elif not quiet:
        _summary(result.stats)


@cli.command()
@click.argument("problem")
@click.option("--algos", required=True, metavar="A[:K],B[:K],...",
              help="Algorithms to compare, optionally with K (e.g. sync,k-async:2,hogwild).")
@_training_options
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default="compare.csv",
              show_default=True, help="Combined log: .csv, or JSON lines for any other suffix.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True),
              help="PNG of eval loss against wall-clock time [default: OUT with .png].")
def compare(problem: str, algos: str, options: tuple[str, ...], as_json: bool, quiet: bool,
            out: str, plot_path: str | None, **kw: Any) -> None:
    """Run several algorithms on PROBLEM with the same seeds, delays and options; write one
    combined log and the error-runtime plot."""
    from . import compare as cmp
    from .problems import load_problem, parse_options

    chosen = cmp.parse_algos(algos)
    prob = load_problem(problem, **parse_options(options))
    base = _config(**kw)

    def done(name, result):
        if not (quiet or as_json):
            st = result.stats
            click.echo(f"{name:<24} {st['updates']:>7} updates  {st['wall_s']:7.2f} s  "
                       f"loss {st['final_loss']:.5g}  staleness {st['staleness_mean']:.2f}", err=True)
    rows, summaries = cmp.compare(prob, chosen, base, source=problem, on_result=done)
    cmp.write_rows(rows, out)
    png = plot_path or out.rsplit(".", 1)[0] + ".png"
    plotted = cmp.plot(rows, png, title=f"{prob.name}: {base.workers} workers, delay {base.delay}")
    if as_json:
        click.echo(json.dumps({"log": out, "plot": png if plotted else None, "runs": summaries}))
    elif not quiet:
        if base.target_loss is not None:
            for st in summaries:
                ttt = st.get("time_to_target_s")
                click.echo(f"{st['label']:<24} time to loss {base.target_loss:g}: "
                           + ("not reached" if ttt is None else f"{ttt:.2f} s"))
        click.echo(f"log: {out}")
        click.echo(f"plot: {png}" if plotted else cmp.PLOT_HINT)


@cli.command("plot")
@click.argument("log", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", help="PNG file [default: LOG with .png].")
@click.option("--title", default="", help="Plot title.")
def plot_cmd(log: str, out: str | None, title: str) -> None:
    """Plot a `shmopt compare` log (CSV or JSON lines): eval loss against wall-clock time."""
    from . import compare as cmp
    png = out or log.rsplit(".", 1)[0] + ".png"
    if not cmp.plot(cmp.read_rows(log), png, title=title):
        raise click.ClickException(cmp.PLOT_HINT)
    click.echo(f"plot: {png}")


@cli.command()
@click.option("--algo", "variant", required=True,
              help="sync, async, k-sync, k-batch-sync, k-async or k-batch-async.")
@click.option("--workers", "-w", type=int, required=True)
@click.option("--k", type=int, help="K of the K-variants (ignored by sync and async).")
@click.option("--delay", required=True, help="none, exp:MEAN, shifted-exp:SHIFT:MEAN, pareto:SCALE:ALPHA.")
@click.option("--compute", type=float, default=0.0, show_default=True,
              help="Constant compute time per mini-batch added to the delay (seconds).")
@click.option("--simulate", is_flag=True, help="Always use the Monte-Carlo simulation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def theory(variant: str, workers: int, k: int | None, delay: str, compute: float, simulate: bool,
           seed: int, as_json: bool) -> None:
    """Expected runtime per iteration E[T] of a K-variant (Dutta et al. 2018): the closed form
    where one exists, else a seeded simulation of the same protocol."""
    from .strategies.theory import expected_iteration_time
    if k is None and variant not in ("sync", "async"):
        raise ConfigError(f"--k is required for {variant} (1 <= k <= workers)")
    r = expected_iteration_time(variant, workers, k, delay, compute=compute,
                                simulate=True if simulate else None, seed=seed)
    if as_json:
        click.echo(json.dumps(r.to_dict()))
        return
    click.echo(f"E[T] = {r.expected_iteration_time_s:.6g} s per iteration  "
               f"({r.variant}, P={r.workers}, K={r.k}, delay {r.delay}"
               + (f", compute {compute:g} s" if compute else "") + ")")
    how = f"closed form {r.formula}" if r.method == "closed-form" else \
        f"simulation of the protocol, {r.iterations} iterations, stderr {r.stderr:.2g} s"
    click.echo(f"method: {how}")


class _Progress:
    """click's progress bar over updates (or seconds, with only a time limit)."""

    def __init__(self, config: Config) -> None:
        self.by_steps = config.steps is not None or config.time_limit is None
        length = config.steps or (5000 if config.time_limit is None else int(config.time_limit * 10))
        self.bar = click.progressbar(length=length, label="training", show_pos=True,
                                     item_show_func=lambda s: s)
        self.bar.__enter__()
        self.done = 0

    def sample(self, s) -> None:
        pos = s.updates if self.by_steps else int(s.t * 10)
        pos = min(pos, self.bar.length)
        loss = "" if s.loss is None else f"loss {s.loss:.5g}"
        self.bar.update(max(0, pos - self.done), f"{loss}  {s.samples_per_s:,.0f} samples/s")
        self.done = max(self.done, pos)

    def close(self) -> None:
        self.bar.__exit__(None, None, None)


def _summary(st: dict) -> None:
    rows = [("algorithm", f"{st['algo']} ({st['rule']}, {st['protocol']}"
             + (f", {st['variant']} k={st['k']}" if st["protocol"] == "server" else "") + ")"),
            ("workers", st["workers"]), ("updates", st["updates"]),
            ("gradients", f"{st['gradients']} ({st['dropped']} dropped, {st['nonfinite']} non-finite)"),
            ("start-up", f"{st['startup_s']:.2f} s"), ("training", f"{st['wall_s']:.2f} s"),
            ("throughput", f"{st['samples_per_s']:,.0f} samples/s"),
            ("staleness", f"mean {st['staleness_mean']:.2f}, max {st['staleness_max']}"),
            ("final loss", "n/a" if st["final_loss"] is None else f"{st['final_loss']:.6g}")]
    if st.get("optimum") is not None:
        rows.append(("optimum", f"{st['optimum']:.6g}"))
    rows.append(("stopped by", st["stop_reason"]))
    for k, v in rows:
        click.echo(f"{k:>12}  {v}")


@cli.command()
def algos() -> None:
    """List the algorithms, one line each."""
    from .strategies import ALGORITHMS
    for a in ALGORITHMS.values():
        click.echo(f"{a.name:<10} {a.summary}")


@cli.command()
def info() -> None:
    """Show cores, /dev/shm, torch and CUDA: what shmopt will run on."""
    import psutil
    import torch

    from .engine.storage import list_segments, shm_free_bytes
    from .rules import fused_adam_available
    free = shm_free_bytes()
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    rows = [("shmopt", __version__), ("python", sys.version.split()[0]),
            ("cores", f"{os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical"),
            ("memory", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
            ("/dev/shm free", "n/a" if free is None else f"{free / 2**30:.1f} GiB"),
            ("torch", torch.__version__), ("fused AMSGrad", "yes" if fused_adam_available() else "no"),
            ("CUDA devices", cuda), ("shmopt segments", len(list_segments()))]
    for k, v in rows:
        click.echo(f"{k:>16}  {v}")


@cli.command()
@click.option("--all", "all_owners", is_flag=True,
              help="Also remove segments of running shmopt processes (stops their runs).")
def clean(all_owners: bool) -> None:
    """Remove shmopt shared-memory segments left by dead processes."""
    from .engine.storage import sweep_stale_segments
    removed = sweep_stale_segments(all_owners=all_owners)
    click.echo(f"removed {len(removed)} segment(s)" + (": " + ", ".join(removed) if removed else ""))


def _register_bench() -> None:
    from .quickbench import bench_command
    cli.add_command(bench_command)


_register_bench()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps errors to one line and exit codes (2 usage, 1 failure)."""
    import warnings
    warnings.formatwarning = lambda message, *args, **kwargs: f"{message}\n"
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = cli.main(args=argv, prog_name="shmopt", standalone_mode=False)
    except click.UsageError as e:
        click.echo(f"shmopt: error: {e.format_message()}", err=True)
        code = 2
    except ConfigError as e:
        click.echo(f"shmopt: error: {e}", err=True)
        code = 2
    except WorkerError as e:
        if e.traceback:
            click.echo(e.traceback.rstrip(), err=True)
        click.echo(f"shmopt: {e}", err=True)
        code = 1
    except ShmoptError as e:
        click.echo(f"shmopt: {e}", err=True)
        code = 1
    except (KeyboardInterrupt, click.Abort):
        click.echo("shmopt: interrupted; workers stopped, shared memory released", err=True)
        code = 130
    except Terminated:
        click.echo("shmopt: terminated; workers stopped, shared memory released", err=True)
        code = 143
    except click.ClickException as e:
        click.echo(f"shmopt: error: {e.format_message()}", err=True)
        code = e.exit_code
    finally:
        signal.signal(signal.SIGTERM, old)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
