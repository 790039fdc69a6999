"""Checkpoints: resume bit for bit, periodic checkpoints of a paused state, continued counting,
refused checkpoints, failed writes, no code ever unpickled, the CLI's errors."""
from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import pytest
import torch

import shmopt
from shmopt.engine import checkpoint as ckpt
from shmopt.errors import ConfigError
from shmopt.problems import load_problem

HERE = pathlib.Path(__file__).parent
FAULTY = str(HERE / "problems_for_tests" / "faulty.py")
SHMOPT = [sys.executable, "-c", "from shmopt.cli import main; main()"]


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_resume_restores_every_buffer_bit_exactly(quad, tmp_path):
    path = str(tmp_path / "run.ckpt")
    a = shmopt.train(quad, algo="apam", workers=2, steps=400, checkpoint=path)
    doc = ckpt.load(path)
    assert doc["algo"] == "apam" and doc["buffers"]["x"].numel() > 0
    # resume with the same step budget: nothing left to do, the state must come back unchanged
    path2 = str(tmp_path / "again.ckpt")
    b = shmopt.train(quad, algo="apam", workers=2, steps=400, resume=path, checkpoint=path2)
    doc2 = ckpt.load(path2)
    assert b.stats["updates"] == a.stats["updates"]
    assert set(doc2["buffers"]) == set(doc["buffers"])
    for name, raw in doc["buffers"].items():
        if name in ("ctrl", "glob"):              # hold per-run times and pids: compared below
            continue
        assert torch.equal(raw, doc2["buffers"][name]), name
    g1 = np.frombuffer(doc["buffers"]["glob"].numpy().tobytes(), dtype=shmopt.engine.control.GLOBAL)
    g2 = np.frombuffer(doc2["buffers"]["glob"].numpy().tobytes(), dtype=shmopt.engine.control.GLOBAL)
    assert g1["version"] == g2["version"]
    c1 = np.frombuffer(doc["buffers"]["ctrl"].numpy().tobytes(), dtype=shmopt.engine.control.SLOT)
    c2 = np.frombuffer(doc2["buffers"]["ctrl"].numpy().tobytes(), dtype=shmopt.engine.control.SLOT)
    for field in ("updates", "applied", "stale_sum", "stale_max", "stale_hist", "lr_sum"):
        assert np.array_equal(c1[field], c2[field]), field
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def _keep_every_checkpoint(monkeypatch) -> list[str]:
    """Copy each checkpoint file as it is written (the final one overwrites the periodic ones)."""
    import shutil
    kept, save = [], ckpt.save

    def keeping(path, *a, **k):
        digest = save(path, *a, **k)
        kept.append(f"{path}.{len(kept)}")
        shutil.copyfile(path, kept[-1])
        return digest
    monkeypatch.setattr(ckpt, "save", keeping)
    return kept


def _records(doc, name, dtype):
    return np.frombuffer(doc["buffers"][name].numpy().tobytes(), dtype=dtype)


@pytest.mark.parametrize("algo,opts", [("apam", {}), ("k-async", {"k": 1, "rule": "amsgrad"})])
def test_each_periodic_checkpoint_is_a_consistent_state(quad, tmp_path, monkeypatch, algo, opts):
    """Every periodic checkpoint of a server protocol (copied while every process is paused
    between updates) has counters that agree exactly with its version and an AMSGrad state that
    is not torn. A lock-free run's (read live, while its learners write) holds the update count of
    the control block it holds."""
    kept = _keep_every_checkpoint(monkeypatch)
    path = str(tmp_path / "run.ckpt")
    shmopt.train(quad, algo=algo, workers=2, steps=600, checkpoint=path, checkpoint_every=150,
                 delay="exp:0.0005", **opts)
    docs = [ckpt.load(p) for p in kept]
    periodic = docs[:-1]
    assert len(periodic) >= 3, len(kept)
    versions = []
    for doc in periodic:
        ctrl = _records(doc, "ctrl", shmopt.engine.control.SLOT)
        glob = _records(doc, "glob", shmopt.engine.control.GLOBAL)[0]
        if algo == "apam":                         # direct: version = sum of the workers' updates
            version = int(ctrl["updates"][:2].sum())
            assert doc["updates"] == version >= 150
            versions.append(version)
            continue                               # read live: other counters and v, vmax may be torn
        else:                                      # the applier's version, one update per gradient
            version = int(glob["version"])
            assert int(ctrl[2]["updates"]) == int(ctrl["applied"].sum()) == version
        assert doc["updates"] == version >= 150
        assert int(ctrl["stale_hist"].sum()) == int(ctrl["applied"].sum())
        assert int(glob["seq"]) % 2 == 0           # no update half written
        v = doc["buffers"]["state_v"].view(torch.float32)
        vmax = doc["buffers"]["state_vmax"].view(torch.float32)
        assert torch.all(vmax >= v)                # vmax = max(vmax, v) after every whole update
        versions.append(version)
    periods = [v // 150 for v in versions]          # one checkpoint per period of 150 updates
    assert periods == sorted(set(periods)) and periods[0] >= 1


def test_resume_continues_counting(quad, tmp_path):
    path = str(tmp_path / "run.ckpt")
    shmopt.train(quad, algo="hogwild", workers=2, steps=300, checkpoint=path, checkpoint_every=100)
    saved = ckpt.load(path)["updates"]
    r = shmopt.train(quad, algo="hogwild", workers=2, steps=700, resume=path)
    assert 700 <= r.stats["updates"] <= 702
    assert r.history[0]["updates"] == saved      # continued from the checkpoint's exact version


@pytest.mark.parametrize("change,needle", [
    (dict(algo="hogwild"), "algo is 'apam' in the checkpoint but 'hogwild' here"),
    (dict(problem_options={"d": 4}), "does not fit this run"),
    (dict(problem_options={"seed": 7}), "data is"),              # same shapes, other data
    (dict(rule="adam"), "rule is 'amsgrad' in the checkpoint but 'adam' here"),
    (dict(protocol="server"), "protocol is 'direct' in the checkpoint but 'server' here"),
])
def test_an_incompatible_checkpoint_is_refused(quad, tmp_path, change, needle):
    path = str(tmp_path / "run.ckpt")
    shmopt.train(quad, algo="apam", workers=2, steps=50, checkpoint=path)
    opts = dict(algo="apam", workers=2, steps=100, resume=path)
    popts = change.pop("problem_options", None)
    opts.update(change)
    prob = load_problem("quadratic", **{"n": 512, "d": 8, **(popts or {})})
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        shmopt.train(prob, **opts)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_a_corrupt_or_foreign_checkpoint_is_refused(quad, tmp_path, damage):
    path = tmp_path / "run.ckpt"
    shmopt.train(quad, algo="apam", workers=2, steps=50, checkpoint=str(path))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 50)
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ConfigError, match="corrupt or truncated|truncated or corrupted|not a shmopt checkpoint"):
        shmopt.train(quad, algo="apam", workers=2, steps=100, resume=str(path))


def test_a_k_change_is_refused(quad, tmp_path):
    path = str(tmp_path / "run.ckpt")
    shmopt.train(quad, algo="k-async", workers=2, k=1, steps=50, checkpoint=path)
    with pytest.raises(ConfigError, match="k is 1 in the checkpoint but 2 here"):
        shmopt.train(quad, algo="k-async", workers=2, k=2, steps=100, resume=path)


def test_a_checkpoint_write_that_fails_leaves_the_previous_file_and_no_temporary(quad, tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    shmopt.train(quad, algo="apam", workers=2, steps=50, checkpoint=str(path))
    before = path.read_bytes()

    def crash(doc, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(ckpt.torch, "save", crash)
    first = ckpt.load(str(path))["updates"]
    with pytest.warns(RuntimeWarning, match=f"disk full.*the last good one is .*run.ckpt \\(update {first}\\)"):
        r = shmopt.train(quad, algo="apam", workers=2, steps=50, checkpoint=str(path))
    monkeypatch.undo()
    assert r.stats["checkpoint_failures"] == 1 and r.stats["checkpoints"] == 0
    assert path.read_bytes() == before and ckpt.load(str(path))["updates"] >= 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt", "run.ckpt.json"]   # no temporary


def test_checkpoint_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "shmopt-checkpoint", "version": 1, "x": Evil()}, path)
    with pytest.raises(ConfigError, match="corrupt"):
        ckpt.load(str(path))
    assert not (tmp_path / "pwned").exists()


def test_cli_resume_and_checkpoint_errors(tmp_path, capsys):
    from shmopt.cli import main
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    for args, needle in ([["run", "quadratic", "--resume", str(bad)], "corrupt or truncated"],
                         [["run", "quadratic", "--resume", "nope.ckpt"], "no such checkpoint"],
                         [["run", "quadratic", "--checkpoint-every", "10"], "needs --checkpoint"],
                         [["run", "quadratic", "--checkpoint", str(tmp_path / "no" / "x.ckpt")], "does not exist"],
                         [["run", "quadratic", "--on-worker-failure", "pray"], "invalid on-worker-failure"],
                         [["run", "quadratic", "--on-nonfinite", "ignore"], "invalid on-nonfinite"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_a_server_protocol_resumes_at_another_worker_count(quad, tmp_path):
    """The mailbox's per-learner rings are rebuilt (they start empty at every resume)."""
    path = str(tmp_path / "run.ckpt")
    shmopt.train(quad, algo="k-async", workers=2, steps=200, checkpoint=path)
    r = shmopt.train(quad, algo="k-async", workers=3, k=1, steps=400, resume=path)
    assert r.history[0]["updates"] == 200 and r.stats["updates"] == 400
