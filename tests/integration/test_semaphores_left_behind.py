"""Named semaphores (/dev/shm/sem.mp-*) that a run killed as a whole leaves behind: a process
group (the run and its resource tracker) is SIGKILLed while it holds multiprocessing locks; the
next start and `shmopt clean` remove them once no process maps them and they are old enough, and
never one that a live process holds."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

from helpers import run_main

from shmopt.memory.semaphores import PREFIX, stale_semaphores, sweep_stale_semaphores
from shmopt.memory.shm import SHM_DIR

HOLD = """
import multiprocessing as mp, os, sys, time
ctx = mp.get_context("spawn")
locks = [ctx.Lock(), ctx.Event(), ctx.Queue()]          # each makes named semaphores
print("ready", flush=True)
time.sleep(600)
"""


def _sems() -> set[str]:
    return {n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)}


def _killed_run() -> set[str]:
    """The semaphores a SIGKILLed process group (with its resource tracker) left."""
    before = _sems()
    proc = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)
    left = _sems() - before
    assert left, "the killed run left no semaphore: the test cannot show the sweep"
    return left


def _age(names: set[str], seconds: float) -> None:
    past = time.time() - seconds
    for n in names:
        os.utime(os.path.join(SHM_DIR, n), (past, past))


def test_semaphores_of_a_killed_run_are_swept_and_held_ones_are_not():
    left = _killed_run()
    assert not set(stale_semaphores()) & left                 # younger than the grace period: kept
    _age(left, 120)
    held = mp.get_context("spawn").Lock()                    # a live one, made old too
    mine = _sems() - left
    _age(mine, 120)
    removed = set(sweep_stale_semaphores())
    assert left <= removed and not (removed & mine)
    assert not (_sems() & left) and mine <= _sems()
    del held


def test_shmopt_clean_reports_the_semaphores_it_removed(capsys):
    left = _killed_run()
    _age(left, 120)
    code, out, _ = run_main(["clean"], capsys)
    assert code == 0 and f"removed {len(left)} semaphore(s) left by killed processes" in out
    assert not (_sems() & left)
