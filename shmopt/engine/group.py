"""The process group: every engine process (the learners, and rank P: engine.roles), from spawn
to the last join.

It spawns every rank from a private start context (forkserver with torch preloaded, or spawn),
waits until all are ready, finds a failure (a process that raised, died by a signal, exited or
stopped sending heartbeats) and restarts a rank when the policy says so. Failure reports come
back in one file per process (``entry.write_report``), never through a pipe.

Shutdown (:func:`shutdown`, shared by ``ProcessGroup.close`` and the engine's ``weakref.finalize``
safety net, so it must not reference the engine): set the stop flag, wake every waiter, join all
against one deadline (``JOIN_TIMEOUT_S``), ``terminate()`` what is left, join 1 s, ``kill()``.
"""
from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import shutil
import signal
import tempfile
import time
from typing import Callable

import numpy as np

from ..errors import NodeError, WorkerError
from ..memory import ArenaHandle
from ..plan import Plan
from . import roles
from .context import ProcessArgs
from .control import DONE, FAILED, PAUSED, READY, RUNNING, STARTING
from .entry import process_main, read_report
from .wakeups import WakeUps

JOIN_TIMEOUT_S = 5.0


def start_context(method: str):
    if method == "forkserver" and "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "shmopt.engine.entry"])
        return ctx
    return mp.get_context("spawn")


def signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def shutdown(glob: np.ndarray | None, procs: list, wakeups: WakeUps | None) -> None:
    if glob is not None:
        try:
            glob[0]["stop"] = 1
        except Exception:
            pass
    if wakeups is not None:
        wakeups.release_all()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(1.0)
        if p.is_alive():
            p.kill()
            p.join(1.0)


class ProcessGroup:
    def __init__(self, arena: Callable[[], ArenaHandle], ctrl: np.ndarray, glob: np.ndarray, payload: bytes,
                 source: str | None, plan: Plan) -> None:
        self._arena, self._ctrl, self._glob = arena, ctrl, glob
        self._payload, self._source = payload, source
        self.plan, self.workers, self.n = plan, plan.workers, roles.processes(plan)
        start_method = plan.supervisor.start_method
        self._ctx = start_context(start_method)
        self.wakeups = WakeUps(self._ctx, self.workers)
        self.procs: list = []
        self._reports = tempfile.mkdtemp(prefix="shmopt-reports-")
        self._spawns = [0] * self.n
        self.failures: list[dict] = []          # restarted failures

    def role(self, rank: int) -> str:
        return roles.name_of(rank, self.plan)

    def _report_path(self, rank: int) -> str:
        return os.path.join(self._reports, f"{rank}.{self._spawns[rank]}.json")

    def _spawn(self, rank: int):
        self._spawns[rank] += 1
        args = ProcessArgs(rank, self._arena(), self._payload, self._source, os.getpid(),
                           self._report_path(rank))
        # not daemonic, so a worker may start processes of its own (a DataLoader with num_workers > 0
        # inside a stream); none outlives the run all the same: shutdown() joins, terminates and
        # kills every rank, and a rank whose supervisor is gone stops at its next check
        p = self._ctx.Process(target=process_main, name=f"shmopt-{self.role(rank).replace(' ', '-')}",
                              args=(args, self.wakeups), daemon=False)
        p.start()
        return p

    def start(self) -> None:
        for rank in range(self.n):
            self.procs.append(self._spawn(rank))

    def sentinels(self) -> list:
        return [p.sentinel for p in self.procs]

    def wait(self, timeout: float) -> None:
        mpc.wait(self.sentinels(), timeout=timeout)

    def live(self) -> list[int]:
        return [r for r, p in enumerate(self.procs) if p.exitcode is None]

    def wait_paused(self, heartbeat_timeout: float, timeout: float = 30.0,
                    ranks: list[int] | None = None) -> None:
        """Until every live process (of ``ranks``, default all) is paused, done, or idle (waiting
        with its device work done), after the supervisor set ``pause``."""
        ctrl = self._ctrl
        deadline = time.monotonic() + timeout
        while True:
            self.find_failure(heartbeat_timeout)
            if all(ctrl[r]["status"] in (PAUSED, DONE) or ctrl[r]["idle"] for r in self.live()
                   if ranks is None or r in ranks):
                return
            if time.monotonic() > deadline:
                raise WorkerError(f"workers did not pause within {timeout} s (a checkpoint or a read of "
                                  f"the device buffers)")
            time.sleep(0.001)

    def wait_ready(self, timeout: float, check) -> None:
        deadline = time.monotonic() + timeout
        while True:
            check()
            if all(self._ctrl[r]["status"] >= READY for r in range(self.n)):
                return
            if time.monotonic() > deadline:
                raise WorkerError(f"workers did not start within {timeout} s (--startup-timeout)")
            self.wait(0.01)

    def find_failure(self, heartbeat_timeout: float) -> None:
        """Raise WorkerError for a process that raised, died or hung."""
        now = time.time()
        for rank, p in enumerate(self.procs):
            role = self.role(rank)
            if p.exitcode is not None and p.exitcode != 0:
                what, tb, typed = read_report(self._report_path(rank))
                if isinstance(typed, NodeError):   # across nodes: the lost node, not a traceback
                    raise typed
                if what:
                    msg = f"{role} (pid {p.pid}) raised {what}"
                elif self._ctrl[rank]["status"] == FAILED:
                    msg = f"{role} (pid {p.pid}) raised an exception (its report was lost)"
                elif p.exitcode < 0:
                    msg = f"{role} (pid {p.pid}) was killed by {signal_name(p.exitcode)}"
                else:
                    msg = f"{role} (pid {p.pid}) exited with code {p.exitcode}"
                raise WorkerError(msg, rank, p.pid, p.exitcode, tb)
            st = self._ctrl[rank]
            if p.exitcode is None and st["status"] == RUNNING and now - st["heartbeat"] > heartbeat_timeout:
                raise WorkerError(f"{role} (pid {p.pid}) sent no heartbeat for "
                                  f"{now - st['heartbeat']:.1f} s (--heartbeat-timeout)", rank, p.pid)

    def restart(self, err: WorkerError, max_restarts: int, t: float, on_applier_restart) -> None:
        """Respawn the failed rank (its shared state carries on); give up after max_restarts."""
        rank = err.rank
        done = sum(f["rank"] == rank for f in self.failures)
        if done >= max_restarts:
            raise WorkerError(f"{err} (after {done} restarts of this rank)", err.rank,
                              err.pid, err.exitcode, err.traceback)
        p = self.procs[rank]
        if p.is_alive():                      # hung: it must go before its slot is reused
            p.kill()
            p.join(2.0)
        self.failures.append({"rank": rank, "pid": err.pid, "error": str(err), "t": t})
        self._ctrl[rank]["status"] = STARTING
        self._ctrl[rank]["heartbeat"] = time.time()
        if not roles.is_learner(rank, self.plan):   # the applier: drop gradients in flight, wake everyone
            on_applier_restart()
            for r in range(self.workers):
                self.wakeups.release(r)
        self.procs[rank] = self._spawn(rank)

    def close(self) -> None:
        shutdown(self._glob, self.procs, self.wakeups)
        shutil.rmtree(self._reports, ignore_errors=True)
