"""Signals and the supervisor: SIGINT/SIGTERM stop cleanly with a checkpoint, Ctrl-C reaches the
process group, a SIGKILLed supervisor takes its workers and segments along; private segments."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

import shmopt
from shmopt import Config, Engine
from shmopt.engine import checkpoint as ckpt
from shmopt.memory import shm as storage

HERE = pathlib.Path(__file__).parent
FAULTY = str(HERE / "problems_for_tests" / "faulty.py")
SHMOPT = [sys.executable, "-c", "from shmopt.cli import main; main()"]


def _records(doc, name, dtype):
    return np.frombuffer(doc["buffers"][name].numpy().tobytes(), dtype=dtype)


# ------------------------------------------------------------------ signals and the supervisor
def _start_cli(*args, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(SHMOPT + ["run", "quadratic", "--steps", "100000000", "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path, start_new_session=True)


def _wait_workers(proc, n, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:   # workers are the forkserver's children; the CLI's own children are helpers
            kids = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.ppid() != proc.pid]
        except psutil.NoSuchProcess:
            kids = []
        segs = [s for s in storage.list_segments() if storage.owner_pid(s) == proc.pid]
        if len(kids) >= n and segs:
            time.sleep(1.0)          # let them step
            return kids, segs
        time.sleep(0.1)
    raise AssertionError("the CLI did not start its workers")


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130),
                                      pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_sigint_and_sigterm_stop_cleanly_with_a_checkpoint(tmp_path, sig, code):
    proc = _start_cli("--workers", "2", "--checkpoint", "final.ckpt", tmp_path=tmp_path)
    kids, segs = _wait_workers(proc, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert (tmp_path / "final.ckpt").exists()
    assert ckpt.load(str(tmp_path / "final.ckpt"))["algo"] == "apam"
    assert not [s for s in segs if s in storage.list_segments()]
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.timeout_s(120)
def test_ctrl_c_in_a_terminal_signals_the_whole_process_group(tmp_path):
    """A terminal's Ctrl-C reaches every process of the foreground group: the workers and the
    forkserver ignore it, the supervisor stops them, checkpoints and exits 130."""
    proc = _start_cli("--workers", "2", "--checkpoint", "final.ckpt", tmp_path=tmp_path)
    kids, segs = _wait_workers(proc, 2)
    assert all(os.getpgid(k.pid) == proc.pid for k in kids)   # the workers are in the CLI's group
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted; workers stopped" in err and "Traceback" not in err
    doc = ckpt.load(str(tmp_path / "final.ckpt"))
    assert doc["updates"] > 0
    status = _records(doc, "ctrl", shmopt.engine.control.SLOT)["status"][:2]
    assert list(status) == [shmopt.engine.control.DONE] * 2     # stopped by the flag, not by SIGINT
    assert not [s for s in segs if s in storage.list_segments()]
    psutil.wait_procs(kids, timeout=10)
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.timeout_s(120)
def test_sigkill_of_the_supervisor_stops_workers_and_leaves_no_segment(tmp_path):
    proc = _start_cli("--workers", "2", tmp_path=tmp_path)
    kids, segs = _wait_workers(proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    gone, alive = psutil.wait_procs(kids, timeout=10)      # the latency: bench/test_latency.py
    assert not alive, f"workers still alive 10 s after the supervisor died: {alive}"
    deadline = time.monotonic() + 5
    while [s for s in segs if s in storage.list_segments()] and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [s for s in segs if s in storage.list_segments()]
    storage.sweep_stale_segments()           # what the next shmopt start (or shmopt clean) does
    assert not [s for s in segs if s in storage.list_segments()]
    if left:
        pytest.fail(f"the resource tracker did not remove {left} (the sweep did)")


def test_segments_are_private_and_unguessable(quad):
    with Engine(quad, Config(algo="apam", workers=2, time_limit=5)) as eng:
        name = eng.arena.name
        mode = os.stat(os.path.join(storage.SHM_DIR, name)).st_mode & 0o777
        assert mode == 0o600
        assert name.startswith(f"shmopt_{os.getpid()}_") and len(name.rsplit("_", 1)[1]) == 16
