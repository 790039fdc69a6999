"""Replica protocols (lsgd, easgd) in real runs: the double well where lsgd finds a minimum and easgd stalls, multi-leader groups."""
from __future__ import annotations

import pathlib

import shmopt

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_double_well_lsgd_reaches_a_minimum_where_easgd_stalls():
    src = str(EXAMPLES / "double_well.py")
    common = dict(workers=4, steps=3000, replica_init="independent", eval_interval=0.5)
    lsgd = shmopt.train(src, algo="lsgd", **common)
    easgd = shmopt.train(src, algo="easgd", **common)
    assert lsgd.final_loss < 0.01                    # a minimum: f = 0 at x = +-1
    assert easgd.final_loss > 0.5                    # stalled near the symmetric point (f = 1)
    assert lsgd.stats["pulls"] > 0 and easgd.stats["pulls"] > 0
    assert lsgd.stats["leader_rank"] in range(4) and len(lsgd.stats["loss_replicas"]) == 4


def test_multi_leader_groups_and_total_trigger_train():
    r = shmopt.train("quadratic", problem_options={"n": 512, "d": 8}, algo="lsgd", workers=4,
                     groups=2, steps=800, lr=0.01, trigger="total", tau=5, tau_global=20, lam=0.5)
    st = r.stats
    assert st["pulls"] > 0 and r.final_loss < 0.2 * r.history[0]["loss"]
    assert st["staleness_max"] == 0 and st["updates"] >= 800
