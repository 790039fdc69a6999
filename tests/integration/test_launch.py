"""shmopt.launch: users' own loops (problems_for_tests/loops.py) in N supervised processes: steps
counted, a failed process named, checkpoints and resume, Ctrl-C and `shmopt top`, bad input."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
from helpers import engine_children

import shmopt
from shmopt.engine.run_view import read_run
from shmopt.errors import ConfigError, WorkerError
from shmopt.memory import ArenaView, list_segments
from shmopt.memory.shm import owner_pid
from shmopt.top import find_runs

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE / "problems_for_tests"))
import loops  # noqa: E402


def _mine() -> list[str]:
    return [s for s in list_segments() if owner_pid(s) == os.getpid()]


def test_a_users_loop_trains_the_shared_model_with_every_step_counted():
    before = _mine()
    model = torch.nn.Linear(4, 1)
    shared = shmopt.share(model)
    opt = shmopt.SharedSGD(shared.parameters(), lr=0.05)
    x, y = loops.data()
    start = float(loops.loss_of(shared, x, y).detach())
    r = shmopt.launch(loops.hogwild, workers=2, model=shared, optimizer=opt, args=(100,))
    assert r.stats["steps"] == 200 and r.stats["exitcodes"] == [0, 0] and r.stats["finished"] == 2
    assert float(loops.loss_of(r.model, x, y).detach()) < 0.1 * start
    opt.close()
    shared.close()
    assert _mine() == before and not engine_children()


@pytest.mark.parametrize("how, needle", [("raise", "process 1 (pid {pid}) raised ValueError: boom"),
                                         ("kill", "process 1 (pid {pid}) was killed by SIGKILL")])
def test_a_failed_process_is_named_and_the_others_stopped(how, needle):
    with shmopt.share(torch.nn.Linear(4, 1)) as shared:
        t0 = time.monotonic()
        with pytest.raises(WorkerError) as info:
            shmopt.launch(loops.fails, workers=2, model=shared, args=(how,))
        assert time.monotonic() - t0 < 30                 # not the others' 60 s sleep
    err = info.value
    assert err.rank == 1 and needle.format(pid=err.pid) in str(err)
    assert (how == "raise") == ("boom from the user's loop" in (err.traceback or ""))
    assert not engine_children()


def test_checkpoints_hold_model_and_optimizer_and_resume_goes_on(tmp_path):
    path = str(tmp_path / "loop.ckpt")
    with shmopt.share(torch.nn.Linear(4, 1)) as shared, \
            shmopt.SharedAdam(shared.parameters(), lr=0.01) as opt:
        r = shmopt.launch(loops.hogwild, workers=2, model=shared, optimizer=opt, args=(50,), checkpoint=path)
        doc = torch.load(path, weights_only=True)
        assert doc["steps"] == 100 and r.stats["checkpoints"] == 1
        assert torch.equal(doc["model"]["weight"], shared.state_dict()["weight"])
        assert doc["optimizer"]["state"][0]["exp_avg"].shape == (1, 4)
    with shmopt.share(torch.nn.Linear(4, 1)) as shared, \
            shmopt.SharedAdam(shared.parameters(), lr=0.01) as opt:
        r = shmopt.launch(loops.hogwild, workers=1, model=shared, optimizer=opt, args=(10,), resume=path)
        assert r.stats["steps"] == 110                    # the step count goes on


def test_bad_input_is_refused_before_anything_starts(tmp_path):
    before = _mine()
    model = torch.nn.Linear(4, 1)
    with pytest.raises(ConfigError, match="define it at module level"):
        shmopt.launch(lambda *a: None, workers=2, model=model)
    with pytest.raises(ConfigError, match="optimizer must be a shmopt shared optimizer"):
        shmopt.launch(loops.hogwild, workers=2, model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1))
    with pytest.raises(ConfigError, match="invalid workers=0"):
        shmopt.launch(loops.hogwild, workers=0, model=model)
    with pytest.raises(ConfigError, match="invalid checkpoint="):
        shmopt.launch(loops.hogwild, workers=1, model=model, checkpoint=str(tmp_path / "no" / "x.ckpt"))
    assert _mine() == before and not engine_children()


SCRIPT = """
import sys, torch, shmopt
sys.path.insert(0, sys.argv[1])
import loops
if __name__ == "__main__":
    model = shmopt.share(torch.nn.Linear(4, 1))
    opt = shmopt.SharedSGD(model.parameters(), lr=0.01)
    shmopt.launch(loops.forever, workers=2, model=model, optimizer=opt, args=(sys.argv[2],))
"""


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_top_sees_a_launched_run_and_a_stop_leaves_nothing(tmp_path, sig):
    """Ctrl-C: the supervisor stops its processes and frees its memory; killed, its processes end
    themselves (its segments go with multiprocessing's resource tracker or the next run's sweep)."""
    marker = tmp_path / "stepping"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(HERE / "problems_for_tests"), str(marker)],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "no step in 60 s"
        (run,) = find_runs(proc.pid)
        view = ArenaView(run.name)
        snap = read_run(view)
        view.close()
        assert snap["algo"] == "launch" and snap["rule"] == "SharedSGD" and len(snap["processes"]) == 2
        kids = [k for k in psutil.Process(proc.pid).children(recursive=True)   # the forkserver's children
                if k.ppid() != proc.pid]
        assert len(kids) == 2
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode != 0 and (sig == signal.SIGKILL or "KeyboardInterrupt" in err)
        assert not psutil.wait_procs(kids, timeout=5)[1]          # none alive
        if sig == signal.SIGINT:
            assert not [s for s in list_segments() if owner_pid(s) == proc.pid]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
