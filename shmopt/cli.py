"""The command line: ``shmopt run | compare | plot | theory | advise | top | data | algos | info | clean``.

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
from .checks import output_path
from .cli_options import RUN, TRAIN, config_from, config_options
from .errors import ConfigError, ShmoptError, WorkerError
from .node_plan import node_path
from .tensorboard import TensorBoard, check_tensorboard


class Terminated(BaseException):
    """SIGTERM, turned into an exception so the engine's ``finally`` blocks run."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess
    raise Terminated


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shmopt")
def cli() -> None:
    """shmopt: shared-memory, multi-process, Hogwild-style training for PyTorch."""


def _problem_options(options: tuple[str, ...], data_dir: str | None) -> dict[str, Any]:
    from .problems import parse_options
    found = parse_options(options)
    if data_dir is not None:
        found["data_dir"] = data_dir
    return found


def _both(*callbacks):
    """One on_sample callback calling each given one (None when none is given)."""
    chosen = [c for c in callbacks if c is not None]
    if not chosen:
        return None
    return lambda s: [c(s) for c in chosen]


def _output_options(f):
    """The options `run` and `compare` share that are not training options."""
    for opt in reversed([
        click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
                     help="Problem option, repeatable (e.g. -o n=10000)."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (last line)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary."),
        click.option("--data-dir", help="Folder with the image problems' files (IDX, CIFAR-10 binary); "
                     "the problem option data_dir."),
        click.option("--tensorboard", "tb_dir", metavar="DIR", help="Also write TensorBoard scalars "
                     "(loss, metrics, throughput, staleness) into DIR (needs tensorboard)."),
    ]):
        f = opt(f)
    return f


@cli.command()
@click.argument("problem")
@config_options(TRAIN, RUN)
@_output_options
@click.option("--save", help="Save the trained model's state_dict (torch.save) to this file.")
def run(problem: str, options: tuple[str, ...], as_json: bool, quiet: bool, data_dir: str | None,
        tb_dir: str | None, save: str | None, **kw: Any) -> None:
    """Train PROBLEM: a built-in (quadratic, logreg, mlp; breast-cancer, digits, mnist,
    fashion-mnist, cifar10 on real data), a .py file with problem(), or module:function."""
    from .engine.supervisor import Engine
    from .problems import load_problem

    config = config_from(kw)
    output_path("save", save)          # before training, so no trained model is lost
    check_tensorboard(tb_dir)
    popts = _problem_options(options, data_dir)
    prob = load_problem(problem, **popts)
    engine = Engine(prob, config, source=problem, problem_options=popts)
    bar = None
    if not (quiet or as_json) and sys.stdout.isatty():
        from .progress import Progress
        p = engine.plan
        adaptive = p.server is not None and p.server.adaptive is not None
        bar = Progress(p.steps, p.supervisor.time_limit, show_k=adaptive)
    tb = TensorBoard(tb_dir) if tb_dir else None
    engine.on_sample = _both(bar.sample if bar else None, tb.sample if tb else None)
    if engine.plan.nodes is not None and save:        # one file per node, like --checkpoint
        save = node_path(save, engine.plan.nodes.rank)
        output_path("save", save)
    try:
        result = engine.run()
    finally:
        for closing in (bar, tb):
            if closing:
                closing.close()
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
@config_options(TRAIN)
@_output_options
@click.option("--out", default="compare.csv", show_default=True,
              help="Combined log: .csv, or JSON lines for any other suffix.")
@click.option("--plot", "plot_path", help="PNG of eval loss against wall-clock time [default: OUT "
              "with .png].")
def compare(problem: str, algos: str, options: tuple[str, ...], as_json: bool, quiet: bool,
            data_dir: str | None, tb_dir: str | None, out: str, plot_path: str | None, **kw: Any) -> None:
    """Run several algorithms on PROBLEM with the same seeds, delays and options; write one
    combined log and the error-runtime plot."""
    from . import compare as cmp
    from .problems import load_problem

    chosen = cmp.parse_algos(algos)
    base = config_from(kw)
    png = plot_path or out.rsplit(".", 1)[0] + ".png"
    output_path("out", out)            # before the first run
    output_path("plot", png)
    check_tensorboard(tb_dir)
    prob = load_problem(problem, **_problem_options(options, data_dir))

    def done(name, result):
        if not (quiet or as_json):
            st = result.stats
            click.echo(f"{name:<24} {st['updates']:>7} updates  {st['wall_s']:7.2f} s  "
                       f"loss {st['final_loss']:.5g}  staleness {st['staleness_mean']:.2f}", err=True)
    rows, summaries = cmp.compare(prob, chosen, base, source=problem, on_result=done, tensorboard=tb_dir)
    cmp.write_rows(rows, out)
    plotted = cmp.plot(rows, png, title=f"{prob.name}: {base.workers} workers, delay {base.delay}")
    if as_json:
        click.echo(json.dumps({"log": out, "plot": png if plotted else None, "runs": summaries}))
    elif not quiet:
        for key, what, target in (("time_to_target_s", "loss", base.target_loss),
                                  ("time_to_accuracy_s", "accuracy", base.target_accuracy)):
            for st in summaries if target is not None else ():
                ttt = st.get(key)
                click.echo(f"{st['label']:<24} time to {what} {target:g}: "
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


def _node_rows(st: dict) -> list[tuple[str, str]]:
    if "messages" in st:                      # server protocols: the global applier and relays
        me = "the global applier" if st["node_rank"] == 0 else "a relay to node 0"
        rows = [("node", f"{st['node_rank']} of {st['nodes']} ({me})"),
                ("messages", f"{st['messages']} ({st['messages_per_update'] or 0:.2f} per update, "
                             f"{st['bytes_per_update'] or 0:,.0f} bytes sent per update)")]
        for row in st.get("per_node", []):
            rows.append((f"node {row['node']}", f"{row['applied']} applied, staleness mean "
                         f"{row['staleness_mean']:.2f}, max {row['staleness_max']}, "
                         f"{row['dropped']} dropped"))
        if st.get("applier_cpu_s_per_update") is not None:
            rows.append(("applier", f"{1e3 * st['applier_cpu_s_per_update']:.3f} ms CPU per update"))
        if st["nodes_lost"]:
            rows.append(("lost", f"{st['nodes_lost']} node(s), carried on without them"))
        return rows
    rows = [("node", f"{st['node_rank']} of {st['nodes']} ({st['all_nodes_updates']} updates on "
                     f"all nodes)"),
            ("exchanges", f"{st['exchanges']} ({st['bytes_per_update'] or 0:,.0f} bytes sent per "
                          f"update, collectives in flight {100 * (st['comm_share'] or 0):.0f}% of the "
                          f"time)"),
            ("node lag", f"mean {st['node_staleness_mean']:.1f}, max {st['node_staleness_max']} "
                         f"local updates unseen by the other nodes at an exchange")]
    if st.get("global_leader"):
        gl = st["global_leader"]
        rows.append(("leader", f"node {gl['node']} worker {gl['worker']} (loss {gl['score']:.5g})"))
    return rows


def _summary(st: dict) -> None:
    rows = [("algorithm", f"{st['algo']} ({st['rule']}, {st['protocol']}"
             + (f", {st['variant']} k={st['k']}" if st["protocol"] == "server" else "") + ")"),
            ("workers", st["workers"] if st.get("device", "cpu") == "cpu"
             else f"{st['workers']} on {st['device']}"),
            ("updates", st["updates"]),
            ("gradients", f"{st['gradients']} ({st['dropped']} dropped, {st['nonfinite']} non-finite)"),
            ("start-up", f"{st['startup_s']:.2f} s"), ("training", f"{st['wall_s']:.2f} s"),
            ("throughput", f"{st['samples_per_s']:,.0f} samples/s"
             + (f", {st['rows_per_s']:,.0f} table rows/s" if st.get("tables") else "")),
            ("staleness", f"mean {st['staleness_mean']:.2f}, max {st['staleness_max']}"),
            *([("lr", f"{st['lr_schedule']}: {st['lr']:.4g} -> {st['lr_last']:.4g}")]
              if st.get("lr_schedule", "constant") != "constant" and st.get("lr_last") is not None else []),
            ("final loss", "n/a" if st["final_loss"] is None else f"{st['final_loss']:.6g}")]
    if st.get("tables"):
        rows.append(("tables", "; ".join(f"{t['name']} {t['rows']:,} x {t['dim']} ({st['table_rule']})"
                                         for t in st["tables"])))
    if st.get("final_accuracy") is not None:
        rows.append(("accuracy", f"{st['final_accuracy']:.4f}"))
    if others := {k: v for k, v in (st.get("final_metrics") or {}).items() if k != "accuracy"}:
        rows.append(("metrics", "  ".join(f"{k} {v:.4g}" for k, v in others.items())))
    if st.get("optimum") is not None:
        rows.append(("optimum", f"{st['optimum']:.6g}"))
    if st.get("k") == "adaptive":
        rows.append(("K", "  ".join(f"{k} from {t:.1f} s" for t, _, k in st["k_schedule"])))
    if st.get("nodes"):
        rows += _node_rows(st)
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

    from .memory.shm import list_segments, shm_free_bytes
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
    """Remove shmopt shared-memory segments left by dead processes, and multiprocessing's named
    semaphores (/dev/shm/sem.mp-*) that no live process maps, older than a minute."""
    from .memory import sweep_stale_segments, sweep_stale_semaphores
    removed = sweep_stale_segments(all_owners=all_owners)
    click.echo(f"removed {len(removed)} segment(s)" + (": " + ", ".join(removed) if removed else ""))
    sems = sweep_stale_semaphores()
    click.echo(f"removed {len(sems)} semaphore(s) left by killed processes"
               + (": " + ", ".join(sems) if sems else ""))


def _register_bench() -> None:
    from .quickbench import bench_command
    from .top import top_command
    cli.add_command(bench_command)
    cli.add_command(top_command)


_register_bench()
from .advise import advise_command  # noqa: E402  (the command lives in its own file)
from .data_cli import data_command  # noqa: E402
from .export import export_command  # noqa: E402

cli.add_command(advise_command)
cli.add_command(data_command)
cli.add_command(export_command)


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
