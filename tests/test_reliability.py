"""Faults, signals, checkpoints: real processes, hard timeouts, nothing left behind."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import torch

import shmopt
from shmopt import Config, Engine, WorkerError
from shmopt.engine import checkpoint as ckpt
from shmopt.memory import shm as storage
from shmopt.errors import ConfigError
from shmopt.problems import load_problem

HERE = pathlib.Path(__file__).parent
FAULTY = str(HERE / "problems_for_tests" / "faulty.py")
SHMOPT = [sys.executable, "-c", "from shmopt.cli import main; main()"]


@pytest.fixture(scope="module")
def quad():
    return load_problem("quadratic", n=512, d=8)


# ------------------------------------------------------------------ worker faults
@pytest.mark.parametrize("algo,opts", [("apam", {}), ("k-async", {"k": 1}), ("sync", {}),
                                       ("lsgd", {})])
def test_restart_policy_respawns_a_killed_worker_and_finishes_the_run(quad, algo, opts):
    eng = Engine(quad, Config(algo=algo, workers=2, steps=1500, on_worker_failure="restart",
                              lr=0.01, delay="exp:0.001", **opts))
    eng.start()
    victim = eng.procs[1]
    threading.Timer(0.4, os.kill, (victim.pid, signal.SIGKILL)).start()
    r = eng.run()
    st = r.stats
    assert st["updates"] >= 1500 and st["stop_reason"] == "steps"
    assert st["restarts"] == 1 and eng.failures[0]["rank"] == 1
    assert "SIGKILL" in eng.failures[0]["error"]
    assert eng.procs[1].pid != victim.pid


def test_restart_gives_up_after_max_restarts():
    with pytest.raises(WorkerError, match=r"raised ValueError.*\(after 2 restarts of this rank\)"):
        shmopt.train(FAULTY, problem_options={"mode": "raise", "after": 0}, algo="hogwild", workers=2,
                     steps=10**6, on_worker_failure="restart", max_restarts=2)


def test_nonfinite_stop_policy_fails_the_run():
    with pytest.raises(WorkerError, match="non-finite"):
        shmopt.train(FAULTY, problem_options={"mode": "nan"}, algo="hogwild", workers=2, steps=10**6,
                     on_nonfinite="stop")


def test_worker_failure_is_detected_by_polling(quad):
    """The latency is measured in bench/test_latency.py; here: detected, named, no hang."""
    eng = Engine(quad, Config(algo="apam", workers=2, time_limit=60))
    eng.start()
    time.sleep(0.2)
    victim = eng.procs[0].pid
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerError, match=f"worker 0 \\(pid {victim}\\) was killed by SIGKILL"):
        deadline = time.monotonic() + 30
        while eng.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    eng.close()


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
        save(path, *a, **k)
        kept.append(f"{path}.{len(kept)}")
        shutil.copyfile(path, kept[-1])
    monkeypatch.setattr(ckpt, "save", keeping)
    return kept


def _records(doc, name, dtype):
    return np.frombuffer(doc["buffers"][name].numpy().tobytes(), dtype=dtype)


@pytest.mark.parametrize("algo,opts", [("apam", {}), ("k-async", {"k": 1, "rule": "amsgrad"})])
def test_each_periodic_checkpoint_is_a_consistent_paused_state(quad, tmp_path, monkeypatch, algo, opts):
    """Every periodic checkpoint (written while the workers are paused between updates) has
    counters that agree exactly with its version and an AMSGrad state that is not torn."""
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
            assert int(ctrl["applied"].sum()) == version
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
    (dict(workers=3), "workers is 2 in the checkpoint but 3 here"),
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
    with pytest.raises(ConfigError, match="corrupt or truncated|not a shmopt checkpoint"):
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
    with pytest.raises(OSError, match="disk full"):
        shmopt.train(quad, algo="apam", workers=2, steps=50, checkpoint=str(path))
    monkeypatch.undo()
    assert path.read_bytes() == before and ckpt.load(str(path))["updates"] >= 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]   # the temp file is gone


def test_checkpoint_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "shmopt-checkpoint", "version": 1, "x": Evil()}, path)
    with pytest.raises(ConfigError, match="corrupt"):
        ckpt.load(str(path))
    assert not (tmp_path / "pwned").exists()


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
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
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
