"""Shared fixtures: every test must leave no shmopt segment in /dev/shm and no child process."""
from __future__ import annotations

import os

import psutil
import pytest

from shmopt.memory.shm import list_segments, owner_pid
from shmopt.problems import load_problem


def _mine() -> list[str]:
    return [n for n in list_segments() if owner_pid(n) == os.getpid()]


def _children() -> list[psutil.Process]:
    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if c.is_running() and c.status() != psutil.STATUS_ZOMBIE:
                out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


def _helper(c: psutil.Process) -> bool:
    """multiprocessing's own long-lived helpers (forkserver, resource tracker) are not workers."""
    try:
        cmd = " ".join(c.cmdline())
        return c.ppid() == os.getpid() and ("forkserver" in cmd or "resource_tracker" in cmd)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves a segment of this process behind or a live worker child."""
    before = set(_mine())
    yield
    leaked = set(_mine()) - before
    workers = [c for c in _children() if not _helper(c)]
    for c in workers:           # reap before failing, so one failure does not cascade
        c.kill()
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"
    assert not workers, f"worker processes left behind: {[c.pid for c in workers]}"


def pytest_sessionfinish(session, exitstatus):
    left = _mine()
    if left:  # pragma: no cover - reported as an error of the whole run
        session.exitstatus = 1
        print(f"\nERROR: shmopt segments left in /dev/shm after the test session: {left}")


@pytest.fixture(autouse=True)
def hard_timeout(request):
    """No test may hang the suite: SIGALRM after 180 s (or @pytest.mark.timeout_s(N))."""
    import signal
    marker = request.node.get_closest_marker("timeout_s")
    seconds = int(marker.args[0]) if marker else 180

    def _expired(signum, frame):
        raise TimeoutError(f"test exceeded its hard timeout of {seconds} s")
    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def quad():
    """A small quadratic problem (generated data, optimum known); a module may define its own."""
    return load_problem("quadratic", n=512, d=8)
