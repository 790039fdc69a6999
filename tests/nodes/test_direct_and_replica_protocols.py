"""Across nodes, for real: two fake nodes on this machine, each a ``python -m shmopt run`` with
one worker and one thread, linked by gloo over 127.0.0.1, every run under a hard timeout.
Every family trains and agrees with its definition; a killed, a silent and an interrupted node
end the others in bounded time; nothing is left in /dev/shm."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from loopback_nodes import (
    HARD_S,
    ROOT,
    env,
    finish,
    free_port,
    launch,
    load,
    no_segment_of,
    ok,
    same_model,
    wait_training,
)

import shmopt
from shmopt.errors import ConfigError
from shmopt.problems import load_problem


# ------------------------------------------------------------------ every family
def test_apam_two_nodes_share_the_steps_and_end_with_one_model(tmp_path):
    save = str(tmp_path / "m.pt")
    procs = launch("apam", "--steps", "2000", "--exchange-every", "10", "--save", save)
    s0, s1 = ok(finish(procs))
    assert s0["exchanges"] == s1["exchanges"]             # every exchange is a collective of both
    for r, s in enumerate((s0, s1)):
        assert (s["node_rank"], s["nodes"], s["updates"], s["all_nodes_updates"]) == (r, 2, 1000, 2000)
        # how many exchanges fit in the run depends on how fast the link keeps up; guaranteed: at
        # least one plus the final one, at most one per 10 node updates plus the final one
        assert 2 <= s["exchanges"] <= 1000 // 10 + 1 and s["bytes_per_update"] > 0
        assert s["final_loss"] < s["optimum"] + 0.02    # logreg starts at ln 2 = 0.69
        assert s["arena"].startswith(f"shmopt_{procs[r].pid}_n{r}_")
    assert s0["final_loss"] == s1["final_loss"]
    assert same_model(str(tmp_path / "m.node0.pt"), str(tmp_path / "m.node1.pt"))
    no_segment_of(procs)


def test_easgd_centres_are_identical_after_the_last_exchange(tmp_path):
    save = str(tmp_path / "c.pt")
    s0, s1 = ok(finish(launch("easgd", "--steps", "1200", "--tau-global", "20", "--save", save)))
    assert s0["exchanges"] == s1["exchanges"] and 2 <= s0["exchanges"] <= 600 // 20 + 1
    assert s0["final_loss"] == s1["final_loss"] < s0["optimum"] + 0.03
    assert same_model(str(tmp_path / "c.node0.pt"), str(tmp_path / "c.node1.pt"))


@pytest.mark.timeout_s(240)
def test_local_sgd_nodes_end_with_the_same_average(tmp_path):
    save = str(tmp_path / "a.pt")
    procs = launch("local-sgd", "--steps", "1200", "--tau-global", "20", "--save", save)
    s0, s1 = ok(finish(procs))
    assert s0["exchanges"] == s1["exchanges"] >= 1
    assert s0["final_loss"] == s1["final_loss"] < s0["optimum"] + 0.03
    assert same_model(str(tmp_path / "a.node0.pt"), str(tmp_path / "a.node1.pt"))
    no_segment_of(procs)


def test_lsgd_global_leader_is_the_best_local_leader_of_all_nodes(tmp_path):
    save = str(tmp_path / "l.pt")
    procs = launch("lsgd", "--steps", "1200", "--tau-global", "20", "--replica-init", "independent",
                   "--save", save, workers=(2, 2))
    s0, s1 = ok(finish(procs))
    g0, g1 = s0["global_leader"], s1["global_leader"]
    assert g0 == {**g1, "local_score": g0["local_score"]}           # every node: the same leader
    best = min((s0, s1), key=lambda s: (s["global_leader"]["local_score"], s["node_rank"]))
    assert g0["node"] == best["node_rank"] and g0["score"] == best["global_leader"]["local_score"]
    assert s0["pulls"] > 0 and s1["pulls"] > 0
    assert same_model(str(tmp_path / "l.node0.pt"), str(tmp_path / "l.node1.pt"))


def test_sync_on_two_nodes_computes_what_one_node_with_twice_the_workers_does(tmp_path):
    two = str(tmp_path / "two.pt")
    s0, s1 = ok(finish(launch("sync", "--steps", "150", "--save", two)))
    assert s0["updates"] == s1["updates"] == s0["exchanges"] == 150
    one = str(tmp_path / "one.pt")
    cmd = [sys.executable, "-m", "shmopt", "run", "logreg", "--algo", "sync", "-w", "2", "--threads",
           "1", "--steps", "150", "--json", "-q", "--save", one]
    single = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=HARD_S)
    assert single.returncode == 0, single.stderr
    a, b = load(str(tmp_path / "two.node0.pt")), load(one)
    for k in a:                            # the same seeds: bit for bit (2 sums of 1 gradient)
        assert torch.equal(a[k], b[k]), k
    assert same_model(str(tmp_path / "two.node0.pt"), str(tmp_path / "two.node1.pt"))


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize("how", ["kill", pytest.param("silent", marks=pytest.mark.slow)])
def test_a_lost_node_ends_the_other_in_bounded_time_with_its_rank(tmp_path, how):
    log = str(tmp_path / "log.jsonl")
    procs = launch("apam", "--time-limit", "90", "--log", log, "--eval-interval", "0.2", timeout=4)
    try:
        wait_training(str(tmp_path / "log.node0.jsonl"))
        if how == "kill":
            procs[1].kill()                            # the node's supervisor: its workers follow
        else:
            os.killpg(procs[1].pid, signal.SIGSTOP)    # the whole node stalls
        rc0 = procs[0].wait(timeout=60)                # a hang guard; bench/test_nodes.py times it
        err0 = procs[0].stderr.read()
        assert rc0 == 1 and "lost node 1" in err0, err0
        if how == "silent":
            os.killpg(procs[1].pid, signal.SIGCONT)
            assert procs[1].wait(timeout=30) == 1
            assert "lost node 0" in procs[1].stderr.read()
    finally:
        finish(procs, timeout=30)
    no_segment_of(procs)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130),
                                       pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_ctrl_c_or_sigterm_on_one_node_stops_every_node_cleanly(tmp_path, sig, code):
    procs = launch("apam", "--time-limit", "90", "--log", str(tmp_path / "log.jsonl"))
    try:
        wait_training(str(tmp_path / "log.node1.jsonl"))
        os.kill(procs[1].pid, sig)
        (rc0, s0, err0), (rc1, _, err1) = finish(procs, timeout=30)
    finally:
        finish(procs, timeout=5)
    assert rc1 == code, err1
    assert rc0 == 0 and s0["stop_reason"] == "peer", err0
    last = json.loads(open(tmp_path / "log.node0.jsonl").read().splitlines()[-1])
    assert last["exchanges"] > 0 and 0 <= last["comm_share"] <= 1      # the log has the node figures
    no_segment_of(procs)


def test_a_checkpointed_job_resumes_on_every_node(tmp_path):
    ck = str(tmp_path / "ck.pt")
    ok(finish(launch("apam", "--steps", "600", "--checkpoint", ck)))
    assert os.path.exists(tmp_path / "ck.node0.pt") and os.path.exists(tmp_path / "ck.node1.pt")
    s0, s1 = ok(finish(launch("apam", "--steps", "1200", "--resume", ck)))
    assert s0["updates"] == s1["updates"] == 600 and s0["all_nodes_updates"] == 1200
    assert s0["final_loss"] == s1["final_loss"] < s0["optimum"] + 0.02
    with pytest.raises(ConfigError, match="is node 0's file of a run across 2 nodes: give --resume the path"):
        shmopt.train(load_problem("logreg"), algo="apam", resume=str(tmp_path / "ck.node0.pt"))


@pytest.mark.parametrize("sampling", ["shard", pytest.param("replace", marks=pytest.mark.slow)])
def test_a_job_across_nodes_resumes_on_one_node_and_on_three(tmp_path, sampling):
    """Every node's learners go on: 2 nodes x 1 worker resume as 1 node x 2 workers (every
    learner's counters and data position kept, the global count going on) and as 3 nodes."""
    ck = str(tmp_path / "ck.pt")
    ok(finish(launch("apam", "--steps", "600", "--sampling", sampling, "--checkpoint", ck)))
    r = shmopt.train(load_problem("logreg"), algo="apam", workers=2, steps=900, sampling=sampling,
                     resume=ck, threads=1)
    assert r.history[0]["updates"] == 600 and 900 <= r.stats["updates"] <= 902
    stats = ok(finish(launch("apam", "--steps", "1200", "--sampling", sampling, "--resume", ck, nodes=3,
                             workers=(1, 1, 1))))
    assert 1200 <= sum(s["updates"] for s in stats) <= 1206 and stats[0]["all_nodes_updates"] >= 1200
    assert stats[0]["final_loss"] < stats[0]["optimum"] + 0.05


def test_nodes_with_different_options_refuse_to_train():
    results = finish(launch("apam", "--steps", "200", workers=(1, 2)))
    for rc, _, err in results:
        assert rc == 1 and "every node needs the same options" in err, err


# ------------------------------------------------------------------ torchrun
@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="no torchrun console script")
@pytest.mark.slow                     # docs/across-machines.md's first block runs torchrun too
def test_torchrun_launches_two_nodes(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    port = free_port()
    procs = [subprocess.Popen(
        [torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "shmopt", "run", "logreg", "--algo", "hogwild",
         "-w", "1", "--threads", "1", "--steps", "600", "--dist-timeout", "20", "--json", "-q"],
        cwd=str(tmp_path), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True) for _ in range(2)]
    stats = ok(finish(procs))
    assert sorted(s["node_rank"] for s in stats) == [0, 1]
    assert all(s["all_nodes_updates"] == 600 for s in stats)
    assert stats[0]["final_loss"] == stats[1]["final_loss"]
