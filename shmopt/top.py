"""``shmopt top [RUN]``: watch a running engine from another terminal, read-only.

It finds the run's arena by name in /dev/shm (RUN: the owner's pid, the run id — the random
part of the segment name, or a unique prefix of it — or the whole segment name), maps its host
block read-only (:class:`~shmopt.memory.ArenaView`: no write is possible, nothing is registered
with the resource tracker, so top never removes a segment nor keeps one alive past its exit) and
redraws a table once per ``--interval``. The run has ended when its segment's name is gone or
its owner has exited: top then draws the final counters (still mapped), prints one last line and
exits 0. ``--json`` prints one read as one JSON line and exits.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import click

from .engine.run_view import is_run, read_run
from .errors import ConfigError, ShmoptError
from .memory import ArenaView
from .memory.shm import SHM_DIR, list_segments, owner_pid, pid_alive, run_id

COLUMNS = (("rank", 4), ("role", 10), ("pid", 7), ("status", 8), ("upd/s", 7), ("grad/s", 7),
           ("updates", 8), ("grads", 8), ("pushed", 7), ("dropped", 7), ("cancel", 6), ("stale", 6),
           ("max", 4), ("hb age", 7), ("loss", 10))


@dataclass
class RunInfo:
    name: str
    pid: int
    run: str
    meta: dict


def find_runs(pid: int | None = None) -> list[RunInfo]:
    """The described engine arenas of live owners (of ``pid`` only, if given)."""
    runs = []
    for name in list_segments():
        owner = owner_pid(name)
        if owner is None or (pid is not None and owner != pid) or not pid_alive(owner):
            continue
        try:
            view = ArenaView(name)
        except (OSError, LookupError, ValueError):  # gone, unreadable, or not described
            continue
        meta = view.meta
        view.close()
        if is_run(meta):
            runs.append(RunInfo(name, owner, run_id(name) or "", meta))
    return sorted(runs, key=lambda r: r.meta.get("created", 0.0))


def resolve(run: str | None) -> RunInfo | list[RunInfo]:
    """The one run that ``run`` names, or the list to choose from (no RUN, several runs)."""
    if run is None:
        runs = find_runs()
        if not runs:
            raise ShmoptError("no shmopt run is running (start one with `shmopt run ...`)")
        return runs[0] if len(runs) == 1 else runs
    if run.isdigit():
        pid = int(run)
        runs = find_runs(pid)
        if not runs:
            why = "is not running a shmopt run" if pid_alive(pid) else "does not exist"
            raise ConfigError(f"invalid RUN {run}: process {pid} {why} (`shmopt top` lists the runs)")
        return runs[0] if len(runs) == 1 else runs
    key = run.lower()
    runs = [r for r in find_runs() if r.name == run or r.run.startswith(key)]
    if len(runs) != 1:
        what = "matches no running shmopt run" if not runs else f"is ambiguous ({len(runs)} runs)"
        raise ConfigError(f"invalid RUN {run!r}: {what}; give an owner pid, a run id or a segment name")
    return runs[0]


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def list_lines(runs: list[RunInfo]) -> list[str]:
    now = time.time()
    lines = [f"{len(runs)} shmopt runs; pick one: shmopt top PID (or RUN ID)",
             f"{'pid':>7}  {'run id':<16}  {'algo':<14} {'workers':>7}  {'age':>7}  problem"]
    for r in runs:
        m = r.meta
        node = f" (node {m['node_rank']} of {m['nodes']})" if m.get("nodes") else ""
        lines.append(f"{r.pid:>7}  {r.run:<16}  {m['algo']:<14} {m['workers']:>7}  "
                     f"{_age(now - m['created']):>7}  {m['problem']}{node}")
    return lines


def rates(prev: dict | None, cur: dict, what: str = "updates") -> list[float | None]:
    """``what`` (updates or gradients) per second of each process over the last refresh (since
    training started, on the first)."""
    if prev is None or cur["time"] <= prev["time"]:
        return [p[f"{what}_per_s"] for p in cur["processes"]]
    dt = cur["time"] - prev["time"]
    return [(c[what] - p[what]) / dt for c, p in zip(cur["processes"], prev["processes"])]


def _cell(v, fmt: str = "{}") -> str:
    return "-" if v is None else fmt.format(v)


def render(snap: dict, prev: dict | None = None, width: int = 30) -> str:
    """The text of one refresh: a header, a row per process, the staleness histogram."""
    s = snap
    elapsed = "starting" if s["elapsed_s"] is None else f"{s['state']} {s['elapsed_s']:.1f} s"
    algo = f"{s['algo']} ({s['rule']}, {s['protocol']}" + (
        f", {s['variant']} k={s['k']})" if s["protocol"] == "server" else ")")
    lines = [f"shmopt top  run {s['run']}  pid {s['pid']}  {s['problem']}  {algo}  "
             f"{s['workers']} workers on {s['device']}  {elapsed}"]
    total = None
    if prev is not None and s["time"] > prev["time"]:
        total = (s["updates"] - prev["updates"]) / (s["time"] - prev["time"])
    elif s["updates_per_s"] is not None:
        total = s["updates_per_s"]
    goal = f"/{s['steps']}" if s["steps"] else ""
    lines.append(f"updates {s['updates']}{goal} ({_cell(total, '{:,.0f}')}/s)  gradients {s['gradients']}  "
                 f"dropped {s['dropped']}  cancelled {s['cancelled']}  non-finite {s['nonfinite']}  "
                 f"staleness mean {s['staleness_mean']:.2f} max {s['staleness_max']}"
                 + (f"  leader {s['leader']}" if s["leader"] is not None else ""))
    if s.get("tables"):
        rate = s["rows_per_s"]
        if prev is not None and s["time"] > prev["time"] and "rows" in prev:
            rate = (s["rows"] - prev["rows"]) / (s["time"] - prev["time"])
        sizes = ", ".join(f"{t['name']} {t['rows']:,} x {t['dim']}" for t in s["tables"])
        lines.append(f"tables {sizes}  rows updated {s['rows']:,} ({_cell(rate, '{:,.0f}')}/s)")
    if "node" in s:
        n = s["node"]
        share = "" if n["comm_share"] is None else f" ({100 * n['comm_share']:.0f}% of the time)"
        lines.append(f"node {n['node_rank']} of {n['nodes']}  exchanges {n['exchanges']}  "
                     f"communication {n['comm_s']:.2f} s{share}  node lag mean "
                     f"{n['node_staleness_mean']:.1f} max {n['node_staleness_max']}  "
                     f"updates on all nodes {n['all_nodes_updates']}")
    if s.get("checkpoint"):
        c = s["checkpoint"]
        lines.append(f"checkpoint {c['path']}: update {c['updates']}, {max(s['time'] - c['time'], 0):.0f} s "
                     f"ago, {(c['bytes'] or 0) / 2 ** 20:,.1f} MiB")
    lines.append("")
    lines.append(" ".join(f"{h:>{w}}" if i != 1 else f"{h:<{w}}" for i, (h, w) in enumerate(COLUMNS)))
    for p, rate, grate in zip(s["processes"], rates(prev, s), rates(prev, s, "gradients")):
        star = "*" if s["leader"] == p["rank"] and p["role"] == "worker" else ""
        cells = [f"{p['rank']}{star}", p["role"], p["pid"] or "-", p["status"], _cell(rate, "{:,.0f}"),
                 _cell(grate, "{:,.0f}"), p["updates"], p["gradients"], p["pushed"], p["dropped"],
                 p["cancelled"],
                 f"{p['staleness_mean']:.2f}", p["staleness_max"],
                 _cell(p["heartbeat_age_s"], "{:.2f}s"), _cell(p["loss"], "{:.5g}")]
        lines.append(" ".join(f"{c:>{w}}" if i != 1 else f"{c:<{w}}"
                              for i, (c, (_, w)) in enumerate(zip(map(str, cells), COLUMNS))))
    hist = s["staleness_hist"]
    if hist:
        lines.append("")
        top = max(hist.values())
        for i, (label, count) in enumerate(hist.items()):
            bar = "#" * max(1, round(width * count / top))
            lines.append(f"{'staleness' if i == 0 else '':>9} {label:>6} |{bar:<{width}} {count}")
    return "\n".join(lines)


def ended(info: RunInfo) -> bool:
    """Has the run stopped: its segment's name removed, or its owner gone?"""
    return not os.path.exists(os.path.join(SHM_DIR, info.name)) or not pid_alive(info.pid)


def final_line(snap: dict) -> str:
    return (f"run {snap['run']} (pid {snap['pid']}) ended: {snap['updates']} updates, "
            f"{snap['gradients']} gradients, {snap['dropped']} dropped, staleness mean "
            f"{snap['staleness_mean']:.2f} max {snap['staleness_max']}")


def watch(info: RunInfo, interval: float, once: bool, as_json: bool) -> None:
    try:
        view = ArenaView(info.name)
    except (OSError, LookupError):
        raise ShmoptError(f"run {info.run} (pid {info.pid}) ended before it could be read") from None
    tty = sys.stdout.isatty() and not once
    prev = None
    try:
        while True:
            over = ended(info)              # first: a read after the end holds the final counters
            snap = read_run(view)
            if as_json:
                click.echo(json.dumps(snap))
                return
            frame = render(snap, prev)
            click.echo(("\x1b[H\x1b[2J" if tty else "") + frame + ("" if tty else "\n"))
            sys.stdout.flush()              # a pipe (| tee, a test) sees every frame as drawn
            if once:
                return
            if over:
                click.echo(final_line(snap))
                return
            prev = snap
            time.sleep(interval)
    except KeyboardInterrupt:
        return                              # leaving top is not an error, and stops nothing
    finally:
        view.close()


@click.command("top")
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one read of the run as one JSON line and exit.")
@click.option("--interval", "-n", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Draw one table and exit.")
def top_command(run: str | None, as_json: bool, interval: float, once: bool) -> None:
    """Watch a running shmopt run (read-only): per-worker updates/s, gradients, staleness,
    heartbeats, losses, the lsgd leader, exchanges across nodes. RUN: the owner's pid or the run
    id (listed when several runs are running)."""
    found = resolve(run)
    if isinstance(found, list):
        if as_json:
            click.echo(json.dumps([{"pid": r.pid, "run": r.run, "segment": r.name, "algo": r.meta["algo"],
                                    "workers": r.meta["workers"], "problem": r.meta["problem"],
                                    "age_s": time.time() - r.meta["created"]} for r in found]))
        else:
            click.echo("\n".join(list_lines(found)))
        return
    watch(found, interval, once, as_json)
