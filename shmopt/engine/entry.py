"""The entry point of every engine process: set up, run the loop of its role, report a failure.

A failure is reported in a file of its own (``ProcessArgs.error_file``, written to a temporary
name and renamed), never through a pipe or queue: a traceback larger than a pipe buffer would
block the dying process forever. The FAILED status in the control block comes first, so the
supervisor reports a failure even if the file never appears. An error that shmopt raises on
purpose with fields (a lost node: :class:`~shmopt.errors.NodeError`) travels typed, with its
fields (:meth:`~shmopt.errors.ShmoptError.to_report`), and is raised again as such.
"""
from __future__ import annotations

import json
import os
import traceback
from functools import partial
from typing import Callable

from ..errors import ShmoptError, error_from_report
from . import roles
from .context import Context, ProcessArgs, Stopped
from .control import DONE, FAILED
from .loops.applier import applier_loop
from .loops.client import client_loop
from .loops.direct import direct_loop
from .loops.replicas import replica_loop
from .nodes.applier_io import open_io
from .nodes.link_loop import link_loop
from .nodes.relay import relay_loop
from .wakeups import WakeUps

#: the loop of each role (engine.roles)
LOOPS: dict[str, Callable[[Context, WakeUps], None]] = {
    "direct": direct_loop, "server": client_loop, "replicas": replica_loop,
    roles.APPLIER: partial(applier_loop, open_io=open_io), roles.LINK: link_loop, roles.RELAY: relay_loop}


def write_report(path: str, exc: BaseException, tb: str) -> None:
    doc = {"pid": os.getpid(), "what": f"{type(exc).__name__}: {exc}", "traceback": tb}
    if isinstance(exc, ShmoptError):
        doc["error"] = exc.to_report()
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def read_report(path: str) -> tuple[str, str, ShmoptError | None]:
    """(what, traceback, the typed error or None) of a failed process; ("", "", None) when it
    left no report."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return "", "", None
    return str(doc.get("what", "")), str(doc.get("traceback", "")), error_from_report(doc.get("error"))


def process_main(args: ProcessArgs, wakeups: WakeUps) -> None:
    ctx = None
    try:
        ctx = Context(args)
        LOOPS[roles.role(ctx.rank, ctx.plan)](ctx, wakeups)
    except Stopped:
        pass
    except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, then exit 1
        try:
            if ctx is not None:
                ctx.counters.set_status(FAILED)
            write_report(args.error_file, exc, traceback.format_exc())
        finally:
            os._exit(1)
    if ctx is not None:
        ctx.release()
        ctx.counters.set_status(DONE)
