"""The supervisor's evaluations run off its loop (a background thread, shmopt/engine/evaluations.py)
and give the loss and the metrics one forward pass (shmopt/engine/evaluator.py)."""
from __future__ import annotations

import pathlib

import torch
from torch import nn

import shmopt
from shmopt.engine.evaluations import EVAL_SHARE, next_due
from shmopt.engine.evaluator import Evaluator
from shmopt.problems import Problem

FAULTY = str(pathlib.Path(__file__).parent / "problems_for_tests" / "faulty.py")


def test_a_slow_evaluation_does_not_hold_the_time_limit():
    """Each evaluation sleeps 2 s; the run's limit is 0.5 s. Before, the supervisor was inside an
    evaluation when the limit passed and stopped only after it (wall >= 2 s)."""
    r = shmopt.train(FAULTY, problem_options={"mode": "slow-eval", "after": 2}, algo="hogwild", workers=1,
                     time_limit=0.5, eval_interval=0.1)
    st = r.stats
    assert st["stop_reason"] == "time_limit" and st["wall_s"] < 2.0
    ts = [s["t"] for s in r.history]
    assert ts[0] == 0.0 and ts == sorted(ts) and len(ts) >= 2     # the first, any in flight, the last


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


def _loss(model, batch):
    x, y = batch
    return (model(x).squeeze(-1) - y).pow(2).mean()


def _metrics(model, batch):
    x, y = batch
    return {"mae": float((model(x).squeeze(-1) - y).abs().mean()), "other": float(model(x * 2).sum())}


def test_loss_and_metrics_share_one_forward_pass_and_values_are_unchanged():
    x, y = torch.randn(64, 3), torch.randn(64)
    problem = Problem("count", _Counting, _loss, (x, y), eval=(x, y), metrics=_metrics)
    model = _Counting()
    ev = Evaluator(problem, model, sum(p.numel() for p in model.parameters()), 64)
    flat = ev.initial_params()
    loss, metrics = ev.evaluate(flat)
    # the loss and "mae" see the same input tensor: one pass; x * 2 is another input: its own pass
    assert model.calls == 2
    with torch.no_grad():
        ref = _Counting()
        ref.load_state_dict(model.state_dict())
        assert loss == float(_loss(ref, (x, y))) and metrics == _metrics(ref, (x, y))
    assert "forward" not in vars(model)           # the model is left as it was


def test_evaluations_keep_to_their_grid_within_their_budget():
    # quick evaluations started a little late stay on the grid: no drift by their lateness or length
    assert next_due(10.0, 10.02, 0.1, 0.5) == 10.5
    # one that took longer than EVAL_SHARE of the interval pushes the next out to keep the budget
    assert next_due(10.0, 10.0, 0.4, 0.5) == 10.0 + 0.4 / EVAL_SHARE
    # far behind the grid (the supervisor was busy): the budget from this start, not a burst
    assert next_due(10.0, 13.0, 0.1, 0.5) == 13.0 + 0.1 / EVAL_SHARE
