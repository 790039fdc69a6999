"""Checkpoint files a user can trust: free space checked before the first step, the last N kept
with a JSON sidecar each, a digest that catches a corrupted file that still unpickles, and a full
disk mid-run survived (the file's writes are made to fail with ENOSPC in the supervisor, where it
runs, so torch.save meets it as it would on a full disk)."""
from __future__ import annotations

import errno
import json
import os
import shutil
from collections import namedtuple

import pytest
import torch
from helpers import engine_children, run_main

import shmopt
from shmopt.engine import checkpoint as ckpt
from shmopt.engine.checkpoint_files import file_digest
from shmopt.errors import ConfigError
from shmopt.memory import list_segments
from shmopt.problems import load_problem


@pytest.fixture
def quad():
    return load_problem("quadratic", n=512, d=8)


def test_the_last_n_are_kept_each_with_a_sidecar(quad, tmp_path):
    path = tmp_path / "run.ckpt"
    eng = shmopt.Engine(quad, shmopt.Config(algo="hogwild", workers=2, steps=10 ** 9, checkpoint=str(path),
                                            keep=3))
    written = []
    try:
        eng.start()
        for _ in range(3):                                   # 3 checkpoints, each at a newer update
            while eng.updates() <= (written[-1] if written else 0):
                assert eng.poll() is None
            eng.write_checkpoint()
            written.append(json.loads((tmp_path / "run.ckpt.json").read_text())["updates"])
    finally:
        eng.close()                                          # the final one: 4 written, 3 kept
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["run.ckpt", "run.ckpt.1", "run.ckpt.1.json", "run.ckpt.2", "run.ckpt.2.json",
                     "run.ckpt.json"]
    sides = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("run.ckpt", "run.ckpt.1", "run.ckpt.2")]
    assert [s["updates"] for s in sides[1:]] == written[:0:-1]          # the 3rd and the 2nd, newest first
    assert sides[0]["updates"] == ckpt.load(str(path))["updates"] >= written[-1]
    assert sides[0]["sha256"] == file_digest(str(path)) and sides[0]["bytes"] == path.stat().st_size
    assert sides[0]["config"]["algo"] == "hogwild" and eng.stats()["checkpoints"] == 4


def test_a_corrupted_checkpoint_that_still_unpickles_is_refused_by_its_digest(quad, tmp_path):
    path = tmp_path / "run.ckpt"
    shmopt.train(quad, algo="apam", workers=2, steps=50, checkpoint=str(path))
    doc = torch.load(path, weights_only=True)
    doc["buffers"]["x"][0] ^= 0xFF                          # one byte of the parameters flipped
    torch.save(doc, path)
    with pytest.raises(ConfigError, match="does not match the digest in .*run.ckpt.json: it is truncated or "
                                          "corrupted"):
        shmopt.train(quad, algo="apam", workers=2, steps=100, resume=str(path))


def test_too_little_free_space_is_refused_before_the_first_step(tmp_path, capsys, monkeypatch):
    Usage, real = namedtuple("Usage", "total used free"), shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda where: Usage(10 ** 9, 10 ** 9 - 4096, 4096)
                        if str(where).startswith(str(tmp_path)) else real(where))     # a full checkpoint disk
    code, out, err = run_main(["run", "mlp", "--steps", "10", "--checkpoint", str(tmp_path / "m.ckpt")], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "invalid checkpoint=" in err and "4.0 KiB free" in err
    assert not engine_children() and not list_segments() and not list(tmp_path.iterdir())


def test_keep_zero_is_refused(tmp_path, capsys):
    code, _, err = run_main(["run", "mlp", "--checkpoint", str(tmp_path / "m.ckpt"), "--keep", "0"], capsys)
    assert code == 2 and "keep" in err and not list(tmp_path.iterdir())


def test_a_full_disk_mid_run_keeps_the_last_good_checkpoint_and_training(quad, tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    real_save, real_write, calls = ckpt.save, os.write, []

    def save(target, *args, **kwargs):
        calls.append(target)
        return real_save(target, *args, **kwargs)

    def write(fd, data):                                     # the disk fills after the first checkpoint
        if len(calls) >= 2 and os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, "No space left on device")    # inside torch.save, as on a full disk
        return real_write(fd, data)

    monkeypatch.setattr(ckpt, "save", save)
    monkeypatch.setattr(os, "write", write)
    eng = shmopt.Engine(quad, shmopt.Config(algo="hogwild", workers=2, steps=10 ** 9, checkpoint=str(path)))
    with pytest.warns(RuntimeWarning) as seen:
        try:
            eng.start()
            assert eng.write_checkpoint() == str(path)
            first = json.loads((tmp_path / "run.ckpt.json").read_text())["updates"]
            assert eng.write_checkpoint() is None             # the full disk: a warning, no raise
            after = eng.updates()
            while eng.updates() <= after:                     # and training goes on
                assert eng.poll() is None
        finally:
            eng.close()                                      # the final one fails too
    lines = [str(w.message) for w in seen]
    assert eng.stats()["checkpoints"] == 1 and eng.stats()["checkpoint_failures"] == 2
    assert any("could not be written" in m and "training goes on" in m for m in lines)
    assert any(m.startswith("shmopt: the final checkpoint could not be written") and
               f"the last good one is {path} (update {first})" in m for m in lines)
    assert ckpt.load(str(path))["updates"] == first            # intact, and it loads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt", "run.ckpt.json"]     # no temporary


def test_the_next_run_removes_what_a_killed_writer_left(quad, tmp_path):
    dead = tmp_path / ".shmopt-ckpt-999999999-abcd"          # no such pid
    live = tmp_path / f".shmopt-ckpt-{os.getpid()}-efgh"      # a writer still alive
    new = tmp_path / ".run.ckpt.new"
    for p in (dead, live, new):
        p.write_bytes(b"half a checkpoint")
    shmopt.train(quad, algo="hogwild", workers=2, steps=20, checkpoint=str(tmp_path / "run.ckpt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "run.ckpt", "run.ckpt.json"])
