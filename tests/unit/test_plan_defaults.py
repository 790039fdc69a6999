"""The plan's defaults and numbers the README states (K, threads, easgd's alpha, lsgd's groups), in one process."""
from __future__ import annotations

import pytest

from shmopt import Config
from shmopt.plan import default_threads, resolve
from shmopt.problems import load_problem


@pytest.fixture(scope="module")
def quad():
    return load_problem("quadratic", n=256, d=4)


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 5, 8])
def test_default_k_is_half_the_workers(quad, workers):
    for algo in ("k-sync", "k-batch-sync", "k-async", "k-batch-async"):
        assert resolve(Config(algo=algo, workers=workers), quad).k == max(1, workers // 2)
    assert resolve(Config(algo="sync", workers=workers), quad).k == workers


def test_the_thread_formula():
    assert [default_threads(w, cores=2) for w in (1, 2, 4)] == [1, 1, 1]
    assert [default_threads(w, cores=16) for w in (1, 2, 4, 15, 16)] == [15, 7, 3, 1, 1]


def test_easgd_alpha_and_lsgd_groups_are_resolved_in_the_plan(quad):
    plan = resolve(Config(algo="easgd", workers=4, beta=0.9), quad)
    assert plan.replicas.alpha == pytest.approx(0.9 / 4)
    plan = resolve(Config(algo="lsgd", workers=4, groups=2), quad)
    assert plan.replicas.members == ((0, 1), (0, 1), (2, 3), (2, 3)) and plan.replicas.group == (0, 0, 1, 1)


def test_groups_give_one_leader_per_group_and_one_global_leader(quad):
    """Each rank's local leader is the best of its own group (from the plan's members), not the
    global best; the global leader is the best of all."""
    from shmopt.strategies.leader import select_leader
    plan = resolve(Config(algo="lsgd", workers=6, groups=3), quad)
    means = [0.9, 0.5, 0.7, 0.8, 0.2, 0.6]
    local = [select_leader(means, plan.replicas.members[r]) for r in range(6)]
    assert local == [1, 1, 2, 2, 4, 4]                     # three groups, three leaders
    assert select_leader(means) == 4
