"""What each worker process sees (rank, seed, threads, affinity, group, batches) and how a failed one is reported."""
from __future__ import annotations

import json
import os
import pathlib

import psutil
import pytest

import shmopt
from shmopt.plan import default_threads

HERE = pathlib.Path(__file__).parent
PROBE = str(HERE / "problems_for_tests" / "probe.py")
FAULTY = str(HERE / "problems_for_tests" / "faulty.py")


def _probe(tmp_path, **opts) -> list[dict]:
    shmopt.train(PROBE, problem_options={"out_dir": str(tmp_path)}, steps=60, **opts)
    return sorted((json.loads(p.read_text()) for p in tmp_path.glob("*.json")), key=lambda d: d["rank"])


def test_each_worker_sees_its_rank_seed_and_thread_budget(tmp_path):
    seen = _probe(tmp_path, algo="hogwild", workers=2, seed=5)
    assert [(d["rank"], d["workers"], d["seed"], d["device"]) for d in seen] == [(0, 2, 5, "cpu"), (1, 2, 6, "cpu")]
    assert all(d["threads"] == default_threads(2) for d in seen)
    assert seen[0]["first_batch"] != seen[1]["first_batch"]      # per-rank seeds: different batches
    assert shmopt.worker_info() is None                           # not in a worker


def test_the_same_seed_gives_the_same_batches(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _probe(tmp_path / "a", algo="hogwild", workers=2)
    b = _probe(tmp_path / "b", algo="hogwild", workers=2)
    assert [d["first_batch"] for d in a] == [d["first_batch"] for d in b]


def test_threads_pin_and_spawn(tmp_path):
    cores = sorted(psutil.Process().cpu_affinity())
    seen = _probe(tmp_path, algo="apam", workers=2, threads=1, pin=True, start_method="spawn")
    assert [d["threads"] for d in seen] == [1, 1]
    assert [d["affinity"] for d in seen] == [[cores[r % len(cores)]] for r in (0, 1)]


def test_worker_info_carries_the_lsgd_group(tmp_path):
    seen = _probe(tmp_path, algo="lsgd", workers=4, groups=2)
    assert [d["group"] for d in seen] == [0, 0, 1, 1]


def test_server_protocol_workers_and_applier(tmp_path):
    seen = _probe(tmp_path, algo="k-async", workers=2, k=1)
    assert [d["rank"] for d in seen] == [0, 1]          # the applier computes no loss


def test_cli_reports_a_failed_worker_with_rank_pid_and_traceback(capsys):
    from shmopt.cli import main
    with pytest.raises(SystemExit) as info:
        main(["run", FAULTY, "-o", "mode=raise", "--algo", "hogwild", "--steps", str(10**6)])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert "Traceback (most recent call last)" in err and "ValueError: boom from the test problem" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("shmopt: worker 0 (pid ") and "raised ValueError" in last
    assert int(last.split("(pid ")[1].split(")")[0]) != os.getpid()
