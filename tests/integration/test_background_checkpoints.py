"""Checkpoints written without stopping training: a lock-free run is read live (no pause), the
other protocols pause only for a private copy (for the whole write when that copy would not fit),
the file is written on the supervisor's writer thread, each checkpoint's pause and write times
are in the summary, and a supervisor killed during a write leaves the previous checkpoint intact
and, once the next run with that path starts, no temporary file."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import shmopt
from shmopt.engine import checkpoint as ckpt
from shmopt.engine.checkpoint_files import TEMP_PREFIX, file_digest
from shmopt.engine.control import PAUSED, SLOT
from shmopt.engine.supervisor import Engine
from shmopt.memory.semaphores import stale_semaphores
from shmopt.memory.shm import SHM_DIR
from shmopt.problems import load_problem


@pytest.fixture
def quad():
    return load_problem("quadratic", n=512, d=8)


def _until(eng: Engine, updates: int) -> None:
    while eng.updates() < updates:
        assert eng.poll() is None


def _checkpoint_while_running(problem, path, monkeypatch=None, **config) -> tuple[dict, dict]:
    """One checkpoint in the background after 50 updates, 50 more updates while it may be written;
    (its log entry, the file as it was then) and the run's summary."""
    eng = Engine(problem, shmopt.Config(workers=2, steps=10 ** 9, checkpoint=str(path), **config))
    try:
        eng.start()
        _until(eng, 50)
        assert eng.write_checkpoint(background=True) == str(path)
        _until(eng, eng.updates() + 50)                  # training goes on meanwhile
        eng.wait_checkpoint()
        side = json.loads((path.parent / (path.name + ".json")).read_text())
        assert side["sha256"] == file_digest(str(path))
        doc = ckpt.load(str(path))
    finally:
        eng.close()
    return doc, eng.stats()


def test_a_lock_free_run_is_read_live_without_a_pause_and_resumes(quad, tmp_path):
    path = tmp_path / "run.ckpt"
    doc, stats = _checkpoint_while_running(quad, path, algo="apam", sampling="shuffle")
    log = stats["checkpoint_log"]
    assert [e["mode"] for e in log] == ["live", "final"] and all(e["ok"] for e in log)
    assert log[0]["pause_s"] == 0.0 and log[0]["write_s"] > 0 and log[0]["updates"] == doc["updates"] >= 50
    assert stats["checkpoints"] == 2
    ctrl = np.frombuffer(doc["buffers"]["ctrl"].numpy(), dtype=SLOT)
    orders = doc["buffers"]["order"].view(torch.int32).view(2, -1)
    for r in range(2):                               # each learner's position read whole
        epoch, length, off = (int(ctrl[r][f]) for f in ("s_epoch", "s_len", "s_off"))
        assert epoch >= 1 and 0 <= off <= length
        if length:
            assert sorted(orders[r, :length].tolist()) == list(range(512))
    r = shmopt.train(quad, algo="apam", workers=2, steps=stats["updates"] + 100, sampling="shuffle",
                     resume=str(path))
    assert r.stats["updates"] >= stats["updates"] + 100


@pytest.mark.parametrize("algo", ["k-async", "lsgd"])
def test_other_protocols_pause_only_for_the_copy(quad, tmp_path, algo):
    path = tmp_path / "run.ckpt"
    doc, stats = _checkpoint_while_running(quad, path, algo=algo)
    log = stats["checkpoint_log"]
    assert [e["mode"] for e in log] == ["staged", "final"] and all(e["ok"] for e in log)
    assert log[0]["pause_s"] > 0 and log[0]["updates"] == doc["updates"]
    assert doc["algo"] == algo


def test_the_private_copy_is_kept_for_the_next_checkpoint_and_dropped_at_close(quad, tmp_path):
    path = tmp_path / "run.ckpt"
    eng = Engine(quad, shmopt.Config(algo="k-async", workers=2, steps=10 ** 9, checkpoint=str(path), keep=2))
    try:
        eng.start()
        _until(eng, 50)
        eng.write_checkpoint(background=True)
        first = eng._staged
        _until(eng, eng.updates() + 50)
        eng.write_checkpoint(background=True)
        assert first is not None and eng._staged is first        # no new pages faulted in
        eng.wait_checkpoint()
        newer, older = ckpt.load(str(path)), ckpt.load(f"{path}.1")
    finally:
        eng.close()
    assert eng._staged is None
    assert newer["updates"] >= older["updates"] + 50             # the copy holds the newer state
    assert not torch.equal(newer["buffers"]["x"], older["buffers"]["x"])


def test_a_server_checkpoint_on_one_machine_pauses_the_applier_alone(quad, tmp_path, monkeypatch):
    """While the copy is taken (made to last 0.5 s), no learner is paused and no update is
    applied; the checkpoint is consistent and resumes."""
    seen, real = [], ckpt.copies

    def slow(arena, skip, into=None):
        ctrl, updates = eng.buffers.ctrl, eng.updates()
        for _ in range(25):
            seen.append([int(s) for s in ctrl["status"][:2]])
            time.sleep(0.02)
        assert eng.updates() == updates                       # the applier waits
        return real(arena, skip, into)

    monkeypatch.setattr(ckpt, "copies", slow)
    path = tmp_path / "run.ckpt"
    eng = Engine(quad, shmopt.Config(algo="k-async", workers=2, steps=10 ** 9, checkpoint=str(path)))
    try:
        eng.start()
        _until(eng, 50)
        eng.write_checkpoint(background=True)
        eng.wait_checkpoint()
        doc = ckpt.load(str(path))
    finally:
        eng.close()
    assert seen and not any(PAUSED in statuses for statuses in seen)       # the learners went on
    assert eng.stats()["checkpoint_log"][0]["mode"] == "staged" and doc["updates"] >= 50
    r = shmopt.train(quad, algo="k-async", workers=2, steps=doc["updates"] + 50, resume=str(path))
    assert r.stats["updates"] >= doc["updates"] + 50


def test_a_copy_that_would_not_fit_is_written_during_the_pause(quad, tmp_path, monkeypatch):
    monkeypatch.setattr(Engine, "_staging_fits", lambda self: False)
    path = tmp_path / "run.ckpt"
    doc, stats = _checkpoint_while_running(quad, path, algo="sync")
    first = stats["checkpoint_log"][0]
    assert first["mode"] == "paused" and first["pause_s"] >= first["write_s"] > 0
    assert first["updates"] == doc["updates"]


SCRIPT = textwrap.dedent('''
    import sys
    import torch
    import torch.nn.functional as F
    from torch import nn
    import shmopt

    def model():
        return nn.Linear(2048, 2048)              # 4.2M parameters: a 67 MB checkpoint under apam

    def loss(m, batch):
        x, y = batch
        return F.mse_loss(m(x), y)

    if __name__ == "__main__":
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(64, 2048, generator=g), torch.randn(64, 2048, generator=g)
        p = shmopt.Problem("wide", model, loss, (x, y), batch_size=8, lr={"amsgrad": 1e-4})
        shmopt.train(p, algo="apam", workers=1, steps=10 ** 9, checkpoint=sys.argv[1], checkpoint_every=2)
''')


def _writing(folder, pid: int) -> list[str]:
    """The files of a checkpoint that process ``pid`` is writing (its temporary file, or the new
    file not yet renamed to PATH)."""
    return [n for n in os.listdir(folder) if n.startswith(f"{TEMP_PREFIX}{pid}-") or n.endswith(".new")]


def test_a_supervisor_killed_during_a_background_write_leaves_the_last_checkpoint(quad, tmp_path):
    script, path = tmp_path / "wide.py", tmp_path / "run.ckpt"
    script.write_text(SCRIPT)
    sems_before = set(os.listdir(SHM_DIR))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120            # a guard against a hang, not a measurement
        while not (path.exists() and (tmp_path / "run.ckpt.json").exists()):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while True:                                  # stop the supervisor in the middle of a write
            assert proc.poll() is None and time.monotonic() < deadline
            if _writing(tmp_path, proc.pid):
                os.kill(proc.pid, signal.SIGSTOP)
                if _writing(tmp_path, proc.pid):
                    break
                os.kill(proc.pid, signal.SIGCONT)    # it finished in between: catch the next one
            time.sleep(0.001)
        left = _writing(tmp_path, proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for name in set(stale_semaphores(grace_s=0)) - sems_before:   # what the killed run held
            os.unlink(os.path.join(SHM_DIR, name))
    assert left and set(left) <= set(os.listdir(tmp_path))
    side = json.loads((tmp_path / "run.ckpt.json").read_text())
    assert file_digest(str(path)) == side["sha256"]           # the last good one, intact
    assert ckpt.load(str(path))["updates"] == side["updates"] > 0
    eng = Engine(quad, shmopt.Config(algo="hogwild", workers=2, steps=10, checkpoint=str(path)))
    try:
        eng.start()                                  # the next run with that path sweeps them
        assert not set(left) & set(os.listdir(tmp_path))
    finally:
        eng.close()
