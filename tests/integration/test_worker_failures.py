"""Worker failures: the restart policy, the non-finite policy, failures found by polling, reports
larger than a pipe or lost, a failing evaluation, and workers leaving a long delay at the stop."""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import sys
import threading
import time

import pytest
from helpers import run_main

import shmopt
from shmopt import Config, Engine, WorkerError
from shmopt.errors import DivergedError

HERE = pathlib.Path(__file__).parent
FAULTY = str(HERE / "problems_for_tests" / "faulty.py")
SHMOPT = [sys.executable, "-c", "from shmopt.cli import main; main()"]


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


@pytest.mark.parametrize("algo", ["hogwild", "sync"])
def test_a_run_whose_every_loss_is_non_finite_stops_with_an_error_not_a_hang(algo):
    """Before: skipped non-finite gradients never reach a step limit, and the run waited forever."""
    with pytest.raises(DivergedError, match=r"the last \d+ mini-batches all gave a non-finite"):
        shmopt.train(FAULTY, problem_options={"mode": "all-nan", "after": 3}, algo=algo, workers=2,
                     steps=10**6)


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


# ------------------------------------------------------------------ reports that once went missing
@pytest.mark.timeout_s(90)
def test_a_traceback_larger_than_a_pipe_buffer_is_reported_not_hung():
    """Before: the worker blocked in its error-queue put forever and the run hung."""
    with pytest.raises(WorkerError) as info:
        shmopt.train(FAULTY, problem_options={"mode": "long"}, algo="hogwild", workers=2, steps=10**7)
    e = info.value
    assert e.rank == 0 and e.exitcode == 1 and "raised ValueError: boom xxx" in str(e)
    assert len(e.traceback) > 300_000 and "faulty.py" in e.traceback


@pytest.mark.timeout_s(90)
def test_a_failure_whose_report_is_lost_is_still_reported():
    eng = Engine(shmopt.load_problem(FAULTY, mode="raise", after=3000),
                 Config(algo="hogwild", workers=2, steps=10**7), source=FAULTY)
    eng.start()
    shutil.rmtree(eng.group._reports)            # the report file can no longer be written
    with pytest.raises(WorkerError, match=r"worker 0 \(pid \d+\) raised an exception \(its report was lost\)"):
        eng.run()


@pytest.mark.timeout_s(60)
def test_a_long_injected_delay_ends_at_the_stop():
    """Workers sleeping a 30 s delay leave by themselves at the stop (exit 0, not terminated)."""
    eng = Engine(shmopt.load_problem("logreg"), Config(algo="hogwild", workers=2, time_limit=0.5,
                                                       delay="shifted-exp:30:1"))
    eng.run()
    assert [p.exitcode for p in eng.procs] == [0, 0]


@pytest.mark.timeout_s(90)
def test_an_exception_in_the_evaluation_is_reported_like_a_worker_failure(capsys):
    with pytest.raises(WorkerError) as info:
        shmopt.train(FAULTY, problem_options={"mode": "eval", "after": 6}, algo="hogwild", workers=2,
                     steps=10**7, eval_interval=0.05)
    assert "the evaluation in the supervisor" in str(info.value) and info.value.rank == -1
    assert "ZeroDivisionError" in info.value.traceback
    code, _, err = run_main(["run", FAULTY, "-o", "mode=eval", "-o", "after=7", "--algo", "hogwild",
                             "--steps", str(10**7), "--eval-interval", "0.05"], capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: boom in the evaluation" in err
    assert err.strip().splitlines()[-1].startswith("shmopt: the evaluation in the supervisor")
