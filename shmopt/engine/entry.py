"""The entry point of every engine process: set up, run the loop of its role, report a failure.

A failure is reported in a file of its own (``ProcessArgs.error_file``, written to a temporary
name and renamed), never through a pipe or queue: a traceback larger than a pipe buffer would
block the dying process forever. The FAILED status in the control block comes first, so the
supervisor reports a failure even if the file never appears.
"""
from __future__ import annotations

import json
import os
import traceback

from .context import Context, ProcessArgs, Stopped
from .control import DONE, FAILED
from .loops.applier import applier_loop
from .loops.client import client_loop
from .loops.direct import direct_loop
from .loops.link import link_loop
from .loops.relay import relay_loop
from .loops.replicas import replica_loop
from .wakeups import WakeUps

LOOPS = {"direct": direct_loop, "server": client_loop, "replicas": replica_loop, "applier": applier_loop,
         "link": link_loop, "relay": relay_loop}


def role(rank: int, plan) -> str:
    """Ranks below ``workers`` are learners; rank ``workers`` is the applier of server protocols
    (across nodes: the global applier on node 0, a relay on the others) or, across nodes, the
    node link of the others."""
    if rank < plan.workers:
        return plan.protocol
    if plan.protocol != "server":
        return "link"
    return "relay" if plan.server.global_applier and plan.nodes.rank > 0 else "applier"


def role_name(plan) -> str:
    """What rank ``workers`` is called in messages."""
    return {"applier": "global applier" if plan.server and plan.server.global_applier else "server",
            "relay": "relay", "link": "node link"}[role(plan.workers, plan)]


def write_report(path: str, what: str, tb: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "what": what, "traceback": tb}, f)
    os.replace(tmp, path)


def read_report(path: str) -> tuple[str, str]:
    """(what, traceback) of a failed process, or ("", "") when it left no report."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return str(doc.get("what", "")), str(doc.get("traceback", ""))
    except (OSError, ValueError):
        return "", ""


def process_main(args: ProcessArgs, wakeups: WakeUps) -> None:
    ctx = None
    try:
        ctx = Context(args)
        LOOPS[role(ctx.rank, ctx.plan)](ctx, wakeups)
    except Stopped:
        pass
    except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, then exit 1
        try:
            if ctx is not None:
                ctx.counters.set_status(FAILED)
            write_report(args.error_file, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            os._exit(1)
    if ctx is not None:
        ctx.release()
        ctx.counters.set_status(DONE)
