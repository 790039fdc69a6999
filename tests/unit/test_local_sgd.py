"""Local SGD (periodic model averaging), the replica method added as one file: its averaging
arithmetic with scripted steps, its registration and its settings (no processes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import shmopt
from shmopt.config import Config
from shmopt.engine.control import GLOBAL, SLOT
from shmopt.plan import resolve
from shmopt.problems import load_problem
from shmopt.strategies.replicas import REPLICA_METHODS, LocalSGD


def _method(workers: int, tau: int) -> LocalSGD:
    return LocalSGD(workers=workers, tau=tau, trigger="worker", independent_init=False)


def _couplers(m: LocalSGD, n: int = 5):
    X = torch.zeros(m.workers, n)
    extra = {name: torch.zeros(shape) for name, shape in m.buffers(n, 1)}
    ctrl, glob = np.zeros(m.workers + 1, SLOT), np.zeros(1, GLOBAL)[0]
    return X, extra, [m.coupler(r, X, extra, ctrl, glob, 0) for r in range(m.workers)]


def test_averaging_together_is_plain_model_averaging():
    m = _method(workers=3, tau=1)
    X, extra, couplers = _couplers(m)
    X.copy_(torch.randn(3, 5))
    rows = X.clone()
    pulls = [c.after_step(1, 1) for c in couplers]
    assert pulls == [1, 1, 1]
    assert torch.allclose(extra["center"], rows.mean(0), atol=1e-6)   # x̄ = (1/P) Σ x_i
    assert torch.equal(X[2], extra["center"])                          # the last one restarts from it


def test_asynchronous_averaging_loses_no_progress():
    # in any interleaving, x̄ - x0 is the mean of every local step every worker made
    gen = torch.Generator().manual_seed(3)
    m = _method(workers=3, tau=2)
    X, extra, couplers = _couplers(m)
    made, steps = torch.zeros(5), [0, 0, 0]
    for _ in range(60):
        r = int(torch.randint(0, 3, (1,), generator=gen))
        d = torch.randn(5, generator=gen)
        X[r] += d                                   # one local update of worker r
        made += d
        steps[r] += 1
        pulled = couplers[r].after_step(steps[r], sum(steps))
        assert pulled == (steps[r] % 2 == 0)        # due every tau of its own steps
    for r, c in enumerate(couplers):                # a last averaging flushes what is pending
        c.after_step(2 * (steps[r] // 2 + 1), 0)
    assert torch.allclose(extra["center"], made / 3, atol=1e-5)


def test_local_sgd_is_registered_and_resolved_from_the_options():
    assert REPLICA_METHODS["local-sgd"] is LocalSGD
    plan = resolve(Config(algo="local-sgd", workers=4, tau=5, replica_init="independent"),
                   load_problem("quadratic", n=64, d=4))
    assert plan.protocol == "replicas" and isinstance(plan.replicas, LocalSGD)
    assert (plan.replicas.tau, plan.replicas.workers, plan.replicas.independent_init) == (5, 4, True)
    with pytest.raises(shmopt.ConfigError, match="max-staleness"):
        resolve(Config(algo="local-sgd", max_staleness=2), load_problem("quadratic", n=64, d=4))


def test_a_restarted_worker_keeps_its_restart_point():
    # x_s lives in the arena: a new coupler (a respawned worker, a resume) goes on from it
    m = _method(workers=2, tau=1)
    X, extra, couplers = _couplers(m)
    X[0] += 1.0
    couplers[0].after_step(1, 1)                       # x̄ = 0.5, x_s,0 = 0.5
    X[0] += 2.0                                        # progress since: 2.0
    again = m.coupler(0, X, extra, np.zeros(3, SLOT), np.zeros(1, GLOBAL)[0], 0)
    again.after_step(1, 2)
    assert torch.allclose(extra["center"], torch.full((5,), 1.5))     # 0.5 + 2.0 / 2
    assert [name for name, _ in m.buffers(5, 1)] == ["center", "restart"]
