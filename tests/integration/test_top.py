"""``shmopt top``: the arena's self-description, the read-only view, reads of a scripted control
block (known counters) and of a live run, the end of a run while top watches, bad RUNs."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import shmopt.top as top
from shmopt import Config, Engine, load_problem
from shmopt.cli import main
from shmopt.engine import control
from shmopt.engine.control import RUNNING, Counters
from shmopt.engine.roles import processes
from shmopt.engine.run_view import describe, read_run
from shmopt.memory import Arena, ArenaView, Layout
from shmopt.memory.describe import layout_from_json, layout_to_json
from shmopt.memory.shm import SHM_DIR, run_id
from shmopt.strategies.leader import windowed_means

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT}


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _digest(arena: Arena) -> str:
    return hashlib.sha256(bytes(arena.storage.host_buffer())).hexdigest()


def test_description_round_trip_and_read_only_view():
    layout = Layout.build(control.specs(3) + [("x", (10,), "float32")])
    assert layout_from_json(json.loads(json.dumps(layout_to_json(layout)))) == layout
    plain = Arena.create(layout)
    described = Arena.create(layout, describe={"kind": "test", "n": 3})
    try:
        # the description lives past the last buffer: offsets and views of the layout unchanged
        assert described.layout == plain.layout == layout
        assert len(described.storage.host_buffer()) > layout.nbytes == len(plain.storage.host_buffer())
        described.array("ctrl")["updates"] = [5, 6, 7]
        described.tensor("x")[:] = 1.5
        view = ArenaView(described.name)
        try:
            assert view.meta == {"kind": "test", "n": 3} and view.layout == layout
            ctrl = view.array("ctrl")
            assert ctrl["updates"].tolist() == [5, 6, 7]
            assert not ctrl.flags.writeable
            with pytest.raises(ValueError):
                ctrl["updates"][0] = 0          # the mapping itself refuses writes
            described.array("ctrl")["updates"][0] = 9
            assert ctrl["updates"][0] == 9      # a live view of the owner's writes, not a copy
        finally:
            view.close()
        with pytest.raises(LookupError):
            ArenaView(plain.name)               # a segment without a description
    finally:
        plain.close()
        described.close()
    with pytest.raises(FileNotFoundError):
        ArenaView(described.name)


def _scripted_run(workers: int = 3) -> tuple[Arena, Engine, dict]:
    """An lsgd arena described as the engine does, its control block filled with known counters
    (no process: the test process is the owner)."""
    eng = Engine(load_problem("quadratic", n=256), Config(algo="lsgd", workers=workers, steps=100))
    arena = Arena.create(eng.layout, describe=describe(eng.plan, "quadratic", "quadratic"))
    now = time.time()
    glob, ctrl = arena.array("glob")[0], arena.array("ctrl")
    glob["t_go"] = now - 10.0
    taus = {0: [0, 1, 1, 5], 1: [2, 3], 2: [0, 0, 0, 0, 0, 9]}
    losses = {0: [3.0, 2.5, 2.0], 1: [1.0, 0.5, 0.25, 0.5], 2: [4.0]}
    for r in range(workers):
        c = Counters(ctrl[r])
        ctrl[r]["pid"] = 1000 + r
        c.set_status(RUNNING)
        ctrl[r]["heartbeat"] = now - 2.0
        for tau in taus[r]:
            c.applied(tau, 0.01)
            c.update()
        for loss in losses[r]:
            c.gradient(32, loss)
        ctrl[r]["dropped"] = r
    return arena, eng, {"taus": taus, "losses": losses, "now": now}


@pytest.mark.timeout_s(60)
def test_top_json_reports_known_counters_and_never_writes():
    arena, eng, known = _scripted_run()
    try:
        before = _digest(arena)
        proc = subprocess.run([sys.executable, "-m", "shmopt", "top", str(os.getpid()), "--json"],
                              capture_output=True, text=True, timeout=60, env=ENV, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""                # no resource-tracker "leak" warning, nothing else
        assert _digest(arena) == before         # top wrote nothing
        assert os.path.exists(os.path.join(SHM_DIR, arena.name))   # nor removed the live segment
        snap = json.loads(proc.stdout.strip().splitlines()[-1])
        taus, losses = known["taus"], known["losses"]
        all_taus = [t for r in taus for t in taus[r]]
        assert (snap["algo"], snap["workers"], snap["state"], snap["run"]) == \
            ("lsgd", 3, "running", run_id(arena.name))
        assert snap["updates"] == len(all_taus) and snap["applied"] == len(all_taus)
        assert snap["dropped"] == 0 + 1 + 2
        assert snap["staleness_max"] == max(all_taus)
        assert snap["staleness_mean"] == pytest.approx(sum(all_taus) / len(all_taus))
        hist = {}
        for t in all_taus:
            label = control.bin_label(control.staleness_bin(t))
            hist[label] = hist.get(label, 0) + 1
        assert snap["staleness_hist"] == hist
        window = eng.plan.replicas.window
        means = windowed_means(np.array([losses[r] + [0.0] * (16 - len(losses[r])) for r in range(3)]),
                               [len(losses[r]) for r in range(3)], window)
        assert snap["leader"] == int(np.argmin(means))
        assert 9.0 < snap["elapsed_s"] < 60.0
        rows = snap["processes"]
        assert len(rows) == processes(eng.plan) == 3
        for r, row in enumerate(rows):
            assert (row["pid"], row["status"], row["updates"]) == (1000 + r, "running", len(taus[r]))
            assert row["staleness_mean"] == pytest.approx(np.mean(taus[r]))
            assert row["loss"] == pytest.approx(np.mean(losses[r]))
            assert 1.5 < row["heartbeat_age_s"] < 60.0
        view = ArenaView(arena.name)
        text = top.render(read_run(view))
        view.close()
        assert f"leader {snap['leader']}" in text and f" {snap['leader']}* " in text
        assert "staleness" in text and "lsgd" in text
    finally:
        arena.close()


def test_top_lists_several_runs_of_one_owner(capsys):
    first, _, _ = _scripted_run(2)
    second, _, _ = _scripted_run(2)
    try:
        code, out, err = _cli(["top", str(os.getpid())], capsys)
        assert code == 0 and err == ""
        assert run_id(first.name) in out and run_id(second.name) in out and "2 shmopt runs" in out
        code, out, _ = _cli(["top", run_id(second.name)[:8], "--json"], capsys)   # a run id prefix
        assert code == 0 and json.loads(out)["segment"] == second.name
    finally:
        first.close()
        second.close()


def test_top_bad_run_and_no_run(capsys, monkeypatch):
    me = str(os.getpid())                       # alive, owns no described arena
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for arg, what in [(me, "is not running a shmopt run"), (str(dead.pid), "does not exist"),
                      ("zzzz", "matches no running shmopt run")]:
        code, out, err = _cli(["top", arg], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and what in err, err
    code, _, err = _cli(["top", "--interval", "0"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(top, "find_runs", lambda pid=None: [])
    code, out, err = _cli(["top"], capsys)
    assert code == 1 and out == "" and err.strip().splitlines() == [
        "shmopt: no shmopt run is running (start one with `shmopt run ...`)"]


_JSON_LATER = ("import sys, shmopt.cli; pid = sys.stdin.readline().strip(); "
               "shmopt.cli.main(['top', pid, '--json'])")


@pytest.mark.timeout_s(90)
def test_top_watches_a_live_run_to_its_end():
    steps = 600
    # a second process, torch already imported, that runs `shmopt top PID --json` on a signal
    later = subprocess.Popen([sys.executable, "-c", _JSON_LATER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    gate, first = threading.Event(), threading.Event()

    def hold(sample):                           # the first sample is taken before the workers go
        if not first.is_set():
            first.set()
            gate.wait(60)

    eng = Engine(load_problem("quadratic", n=512), Config(algo="apam", workers=2, steps=steps,
                                                          delay="shifted-exp:0.01:0.002"),
                 on_sample=hold)
    out: dict = {}
    runner = threading.Thread(target=lambda: out.setdefault("result", eng.run()), daemon=True)
    runner.start()
    watcher = None
    try:
        assert first.wait(60)
        name = eng.arena.name
        view = ArenaView(name)
        watcher = subprocess.Popen([sys.executable, "-m", "shmopt", "top", str(os.getpid()), "-n", "0.2"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                   cwd=ROOT)
        assert watcher.stdout.readline().startswith("shmopt top  run ")   # attached, first frame
        assert read_run(view)["state"] == "starting"
        gate.set()
        seen = []
        while (s := read_run(view))["updates"] < 40 and runner.is_alive():
            seen.append(s["updates"])
            time.sleep(0.02)
        assert s["state"] == "running" and s["elapsed_s"] > 0
        later.stdin.write(f"{os.getpid()}\n")
        later.stdin.flush()
        live_out, live_err = later.communicate(timeout=60)
        assert later.returncode == 0, live_err
        live = json.loads(live_out)
        assert (live["algo"], live["workers"], live["protocol"]) == ("apam", 2, "direct")
        assert 40 <= live["updates"] <= steps + 1 and live["updates"] == sum(
            p["updates"] for p in live["processes"][:2])
        assert seen == sorted(seen)
        runner.join(60)
        stats = out["result"].stats
        assert not os.path.exists(os.path.join(SHM_DIR, name))        # the run removed it
        final = read_run(view)                  # still mapped here: the final counters
        view.close()
        for key in ("updates", "gradients", "applied", "dropped", "cancelled", "staleness_max",
                    "staleness_hist", "samples"):
            assert final[key] == stats[key], key
        assert final["staleness_mean"] == pytest.approx(stats["staleness_mean"])
        assert [p["status"] for p in final["processes"]] == ["done", "done"]
        rest, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0 and err == "", err     # no resource-tracker warning either
        last = rest.strip().splitlines()[-1]
        assert last.startswith(f"run {run_id(name)} (pid {os.getpid()}) ended: {stats['updates']} updates")
    finally:
        gate.set()
        runner.join(60)
        for p in (later, watcher):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_top_shows_the_newest_checkpoint_from_its_sidecar(tmp_path):
    path = tmp_path / "run.ckpt"
    eng = Engine(load_problem("quadratic"), Config(algo="hogwild", workers=2, steps=10 ** 9, checkpoint=str(path),
                                                   checkpoint_every=200))
    try:
        eng.start()
        deadline = time.monotonic() + 60
        while not (tmp_path / "run.ckpt.json").exists() and time.monotonic() < deadline:
            assert eng.poll() is None
            time.sleep(0.01)
        before = json.loads((tmp_path / "run.ckpt.json").read_text())["updates"]
        view = ArenaView(eng.arena.name)
        snap = read_run(view)
        view.close()
        after = json.loads((tmp_path / "run.ckpt.json").read_text())["updates"]   # checkpoints go on
        seen = snap["checkpoint"]["updates"]
        assert snap["checkpoint"]["path"] == str(path) and 200 <= before <= seen <= after
        assert f"checkpoint {path}: update {seen}," in top.render(snap)
    finally:
        eng.close()
