"""Shared helpers of the benchmark suite.

* ``quick`` (fixture): True when ``SHMOPT_BENCH_QUICK=1`` is set; the benchmarks then use short
  settings (fewer rounds, shorter runs) so that they can be tried while developing without
  loading a shared machine for minutes. The published figures come from a run without it.
* ``no_leaks`` (fixture, opt-in with ``pytestmark = pytest.mark.usefixtures("no_leaks")``): fail
  a benchmark that leaves a shmopt segment of this process or a live child process behind (the
  same contract as tests/conftest.py).
* ``warm_forkserver`` (fixture): one tiny run so that the forkserver (torch preloaded) is up
  before a timed measurement.

Every figure of the suite is a ratio of two things measured interleaved (back to back, in the
same round) and reported as a median over rounds: the machine this runs on is shared and noisy,
absolute timings swing by 3x from minute to minute.
"""
from __future__ import annotations

import os
import time

import psutil
import pytest


def _quick() -> bool:
    return os.environ.get("SHMOPT_BENCH_QUICK", "") not in ("", "0")


@pytest.fixture(scope="session")
def quick() -> bool:
    return _quick()


def _my_segments() -> set[str]:
    from shmopt.memory.shm import list_segments, owner_pid
    return {n for n in list_segments() if owner_pid(n) == os.getpid()}


def _live_workers() -> list[psutil.Process]:
    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if not c.is_running() or c.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(c.cmdline())
            if c.ppid() == os.getpid() and ("forkserver" in cmd or "resource_tracker" in cmd):
                continue            # multiprocessing's own long-lived helpers
            out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
def no_leaks():
    before = _my_segments()
    yield
    leaked = _my_segments() - before
    workers = _live_workers()
    for c in workers:
        c.kill()
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"
    assert not workers, f"processes left behind: {[c.pid for c in workers]}"


class CpuProbe:
    """``on_sample`` callback for ``shmopt.train``: where the CPU went during a run.

    The supervisor calls it at every evaluation: the first call comes right before the workers
    are released, the last one right after the stop flag is set. Between the first call and the
    last call at which every engine process is still alive, it measures the CPU seconds of the
    engine's processes (the descendants of this process except multiprocessing's forkserver and
    resource tracker), of this process (the supervisor) and of the whole machine
    (``psutil.cpu_times``), as cores: CPU seconds / wall seconds. ``other_cores`` is what the
    rest of the machine used meanwhile (another job's load).
    """

    def __init__(self) -> None:
        self.snaps: list[tuple[float, dict[int, float], float, float]] = []

    @staticmethod
    def _snapshot() -> tuple[float, dict[int, float], float, float]:
        me = psutil.Process()
        workers: dict[int, float] = {}
        for c in me.children(recursive=True):
            try:
                if c.ppid() == me.pid:
                    cmd = " ".join(c.cmdline())
                    if "forkserver" in cmd or "resource_tracker" in cmd:
                        continue
                if c.status() == psutil.STATUS_ZOMBIE:
                    continue
                t = c.cpu_times()
                workers[c.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        t = me.cpu_times()
        s = psutil.cpu_times()
        busy = sum(s) - s.idle - getattr(s, "iowait", 0.0)
        return time.monotonic(), workers, t.user + t.system, busy

    def __call__(self, sample) -> None:
        self.snaps.append(self._snapshot())

    def cores(self) -> dict[str, float]:
        if len(self.snaps) < 2:
            return {}
        first = self.snaps[0]
        alive = [s for s in self.snaps[1:] if set(first[1]) <= set(s[1])]
        if not alive:
            return {}
        last = alive[-1]
        dt = max(last[0] - first[0], 1e-9)
        workers = sum(last[1][p] - first[1][p] for p in first[1]) / dt
        supervisor = (last[2] - first[2]) / dt
        busy = (last[3] - first[3]) / dt
        return {"worker_cores": workers, "supervisor_cores": supervisor, "busy_cores": busy,
                "other_cores": max(0.0, busy - workers - supervisor), "window_s": dt}


@pytest.fixture(scope="session")
def cpu_probe():
    """The :class:`CpuProbe` class (make one per run)."""
    return CpuProbe


@pytest.fixture(scope="session")
def warm_forkserver():
    import shmopt
    shmopt.train("logreg", algo="apam", workers=2, steps=20)
