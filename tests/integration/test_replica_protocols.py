"""Replica protocols (lsgd, easgd, local-sgd) in real runs: the double well where lsgd finds a minimum and easgd stalls, multi-leader groups, local SGD to the optimum."""
from __future__ import annotations

import pathlib

import pytest

import shmopt

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_double_well_lsgd_reaches_a_minimum_where_easgd_stalls():
    src = str(EXAMPLES / "double_well.py")
    common = dict(workers=4, steps=3000, replica_init="independent", eval_interval=0.5)
    lsgd = shmopt.train(src, algo="lsgd", **common)
    easgd = shmopt.train(src, algo="easgd", **common)
    assert lsgd.final_loss < 0.01                    # a minimum: f = 0 at x = +-1
    # easgd's centre stays between the sides (f = 1 at x = 0); how far the asynchronous elastic
    # pulls let it drift toward one side depends on the workers' interleaving (a CI run under load
    # ended at f = 0.31), never to a minimum in these steps
    assert easgd.final_loss > 0.1
    assert lsgd.stats["pulls"] > 0 and easgd.stats["pulls"] > 0
    assert lsgd.stats["leader_rank"] in range(4) and len(lsgd.stats["loss_replicas"]) == 4


def test_multi_leader_groups_and_total_trigger_train():
    r = shmopt.train("quadratic", problem_options={"n": 512, "d": 8}, algo="lsgd", workers=4,
                     groups=2, steps=800, lr=0.01, trigger="total", tau=5, tau_global=20, lam=0.5)
    st = r.stats
    assert st["pulls"] > 0 and r.final_loss < 0.2 * r.history[0]["loss"]
    assert st["staleness_max"] == 0 and st["updates"] >= 800


@pytest.mark.timeout_s(120)
def test_local_sgd_trains_logreg_to_the_optimum_and_averages_every_tau_steps():
    tau = 10
    r = shmopt.train("logreg", algo="local-sgd", workers=2, steps=3000, tau=tau)
    st = r.stats
    assert st["variant"] == "local-sgd" and st["protocol"] == "replicas"
    assert st["final_loss"] < st["optimum"] * 1.01
    # every worker averaged once per tau of its own steps (the one step in flight at the stop aside)
    assert (st["updates"] - 2 * (tau - 1)) // tau <= st["pulls"] <= st["updates"] // tau
    assert len(st["loss_replicas"]) == 2 and st["loss_average"] is not None
