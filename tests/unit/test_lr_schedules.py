"""Learning-rate schedules on the global update count (--lr-schedule, --lr-warmup, GlobalStepLR).

The oracle of each schedule is its formula (shmopt/strategies/schedules.py); the engine tests
check that the rate follows the *global* count: with 2 workers, the smallest rate applied is the
one of the last global update, not of a worker's own half of them."""
from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
from helpers import run_children, run_main

import shmopt
from shmopt.errors import ConfigError
from shmopt.strategies.schedules import parse_schedule


@pytest.mark.parametrize("spec,k,expected", [
    ("constant", 500, 1.0),
    ("inv-sqrt:100", 49, 1.0),                          # min(c/sqrt(k+1), 1), c = sqrt(100)
    ("inv-sqrt:100", 399, math.sqrt(100 / 400)),
    ("cosine", 500, 0.5),                               # half-way through a budget of 1000
    ("cosine:0.2", 1000, 0.2),
    ("linear:0.5", 250, 1 - 0.5 * 0.25),
    ("exp:0.1", 500, 0.1 ** 0.5),
    ("step:100", 250, 0.1 ** 2),
    ("step:100:0.5", 99, 1.0),
])
def test_each_schedule_follows_its_formula(spec, k, expected):
    assert parse_schedule(spec, 0, 1000).factor(k) == pytest.approx(expected)


def test_warm_up_is_linear_and_the_decay_starts_after_it():
    s = parse_schedule("cosine", warmup=100, budget=1100)
    assert [s.factor(k) for k in (0, 49, 99)] == pytest.approx([0.01, 0.5, 1.0])
    assert s.factor(600) == pytest.approx(0.5) and s.factor(5000) == pytest.approx(0.0)


@pytest.mark.parametrize("spec,warmup,budget,message", [
    ("bogus", 0, 10, "invalid lr-schedule='bogus': use constant, inv-sqrt[:S]"),
    ("cosine:1.5", 0, 10, "FLOOR must be in [0, 1)"),
    ("exp", 0, 10, "exp takes 1 to 1 number(s)"),
    ("step:2.5", 0, 10, "N must be a whole number >= 1"),
    ("linear:x", 0, 10, "its numbers must be numbers"),
    ("cosine", 0, None, "decays over the step budget: give --steps greater than --lr-warmup (0)"),
    ("linear", 50, 50, "give --steps greater than --lr-warmup (50), not 50"),
])
def test_bad_schedules_are_one_line_config_errors(spec, warmup, budget, message):
    with pytest.raises(ConfigError, match=None) as e:
        parse_schedule(spec, warmup, budget)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_refuses_a_decay_without_a_step_budget_before_starting(capsys):
    code, _, err = run_main(["run", "logreg", "--algo", "hogwild", "-w", "1", "--time-limit", "1",
                             "--lr-schedule", "cosine"], capsys)
    assert code == 2 and err.strip().startswith("shmopt: error: the cosine lr schedule decays over the step")
    code, _, err = run_main(["run", "logreg", "--lr-schedule", "cosine:2"], capsys)
    assert code == 2 and "FLOOR must be in [0, 1)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("algo", ["hogwild", pytest.param("sync", marks=pytest.mark.slow),
                                  pytest.param("local-sgd", marks=pytest.mark.slow)])
def test_the_engine_follows_the_global_update_count(algo):
    steps, lr = 200, 0.05
    r = shmopt.train("logreg", algo=algo, workers=2, steps=steps, lr=lr, lr_schedule="linear:0.5",
                     eval_interval=10.0)
    st = r.stats
    # replicas may overshoot the budget by one update per other worker (each checks, then steps)
    assert st["lr_schedule"] == "linear:0.5" and steps <= st["updates"] <= steps + 1
    assert st["lr_last"] == pytest.approx(lr * (1 - 0.5 * min(1.0, (st["updates"] - 1) / steps)))
    # a worker's own count would stop half-way down (about 0.75 lr); the global one reaches 0.5 lr
    assert st["lr_min"] == pytest.approx(st["lr_last"], rel=0.02)
    assert st["lr_max"] == pytest.approx(lr, rel=0.01)


def _stepper(opt, model, n, q):
    for _ in range(n):
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        opt.zero_grad()
    q.put(opt.step_count)


def test_global_step_lr_follows_every_process_steps():
    model = shmopt.share(torch.nn.Linear(3, 1))
    opt = shmopt.SharedSGD(model.parameters(), lr=0.1)
    try:
        sched = shmopt.GlobalStepLR(opt, "linear:0.2", budget=20)
        (count,) = run_children(mp.get_context("spawn"), _stepper, [(opt, model, 10)])
        assert count == 10 and opt.step_count == 10
        model(torch.ones(1, 3)).sum().backward()
        opt.step()                     # one step here: the count is the child's 10 + this one
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 0.8 * 11 / 20))
    finally:
        opt.close()
        model.close()
    with pytest.raises(shmopt.shared.SharingError, match="needs a shmopt shared optimizer"):
        shmopt.GlobalStepLR(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))


@pytest.mark.parametrize("rule,budget", [("amsgrad", "cosine"), ("adam", "cosine"), ("sgd", "constant"),
                                         ("adagrad", "constant")])
def test_recommended_schedules_are_valid_schedules(rule, budget):
    from shmopt.strategies.schedules import recommend
    rec = recommend(rule)
    assert rec["target"] == "constant" and rec["budget"] == budget and rule in rec["why"]
    for name in (rec["target"], rec["budget"]):
        assert parse_schedule(name, budget=1000).name == name
