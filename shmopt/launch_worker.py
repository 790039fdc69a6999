"""The side of :func:`shmopt.launch` that runs in each process: the user's function, watched.

A process started by ``launch`` ignores Ctrl-C (the supervisor handles it), sets
``shmopt.worker_info()``, its seed (seed + rank) and thread budget, then calls
``fn(rank, model, optimizer, *args)``. A daemon thread beats a heartbeat into the process's control
slot every ``BEAT_S`` (with the updates applied through the shared optimizer here, for ``shmopt top``)
and ends the process when the supervisor is gone, whatever the user's loop is doing. An exception
in ``fn`` is written to the process's report file and the process exits 1.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .engine.control import DONE, FAILED, RUNNING
from .engine.entry import write_report
from .memory import Arena, ArenaHandle
from .problems.worker_info import WorkerInfo, set_worker_info

BEAT_S = 0.1


@dataclass(frozen=True)
class LaunchArgs:
    """What one launched process gets (pickled by spawn)."""

    rank: int
    workers: int
    fn: Callable[..., Any]
    model: Any                       # a SharedModel: pickles by handle
    optimizer: Any                   # a shared optimizer (pickles by handle) or None
    args: tuple
    seed: int
    threads: int
    control: ArenaHandle
    report: str
    supervisor_pid: int


def _supervisor_alive(pid: int) -> bool:
    """The supervisor's sentinel (closed when it dies, even before it is reaped), else its pid."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid == pid:
        return parent.is_alive()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _watch(slot, optimizer, supervisor_pid: int) -> None:
    while True:
        if not _supervisor_alive(supervisor_pid):   # the supervisor is gone: so is this run
            os._exit(1)
        slot["heartbeat"] = time.time()
        if optimizer is not None:
            steps = optimizer.process_steps
            slot["updates"] = slot["applied"] = slot["grads"] = steps
        time.sleep(BEAT_S)


def launched_main(a: LaunchArgs) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    multiprocessing.set_start_method(None, force=True)     # the loop's own processes: the platform's
    control = Arena.attach(a.control)
    slot = control.array("ctrl")[a.rank]
    try:
        set_worker_info(WorkerInfo(a.rank, a.workers, 0, a.seed + a.rank, "cpu", a.rank, a.workers))
        torch.manual_seed(a.seed + a.rank)
        torch.set_num_threads(a.threads)
        slot["pid"], slot["heartbeat"] = os.getpid(), time.time()
        slot["status"] = RUNNING
        threading.Thread(target=_watch, args=(slot, a.optimizer, a.supervisor_pid), daemon=True,
                         name="shmopt-heartbeat").start()
        a.fn(a.rank, a.model, a.optimizer, *a.args)
    except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, then exit 1
        try:
            slot["status"] = FAILED
            write_report(a.report, exc, traceback.format_exc())
        finally:
            os._exit(1)
    if a.optimizer is not None:
        steps = a.optimizer.process_steps
        slot["updates"] = slot["applied"] = slot["grads"] = steps
    slot["status"] = DONE
