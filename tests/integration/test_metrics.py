"""A problem's metrics (accuracy for the classification built-ins): computed with the loss at
every evaluation, in the log and the summary, and --target-accuracy stops a run."""
from __future__ import annotations

import json

import pytest
import torch

import shmopt
from shmopt.errors import ConfigError, ProblemError
from shmopt.problems import Problem, load_problem
from shmopt.problems.builtin import class_accuracy, cross_entropy_loss, linear_model


def test_logreg_reports_accuracy_in_every_sample_and_the_summary(tmp_path):
    log = tmp_path / "log.jsonl"
    r = shmopt.train("logreg", algo="apam", workers=2, steps=1500, log=str(log))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in rows)
    assert r.stats["final_accuracy"] == r.stats["final_metrics"]["accuracy"] == rows[-1]["accuracy"]
    assert r.stats["final_accuracy"] > rows[0]["accuracy"] and r.stats["final_accuracy"] > 0.8


def test_target_accuracy_stops_the_run():
    r = shmopt.train("mlp", algo="apam", workers=2, target_accuracy=0.5, time_limit=60, eval_interval=0.2)
    assert r.stats["stop_reason"] == "target_accuracy" and r.stats["final_accuracy"] >= 0.5


def test_target_accuracy_needs_a_problem_that_reports_it_and_a_sane_value():
    with pytest.raises(ConfigError, match="problem 'quadratic' reports no accuracy"):
        shmopt.train("quadratic", target_accuracy=0.9)
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="invalid target-accuracy"):
            shmopt.train("logreg", target_accuracy=bad)


def _bad_metrics(model, batch):
    return {"accuracy": float("nan")}


def test_a_broken_metrics_function_is_one_problem_error():
    X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    p = Problem("toy", model=lambda: linear_model(4, 3), loss=cross_entropy_loss, train=(X, y),
                metrics=_bad_metrics)
    with pytest.raises(ProblemError, match="metrics must return a non-empty dict of name -> finite number"):
        p.metric_names(linear_model(4, 3))
    ok = Problem("toy", model=lambda: linear_model(4, 3), loss=cross_entropy_loss, train=(X, y),
                 metrics=class_accuracy)
    assert ok.metric_names(linear_model(4, 3)) == ("accuracy",)
    assert load_problem("quadratic").metric_names(linear_model(4, 1)) == ()


def test_mlp_at_its_defaults_learns_without_overfitting():
    """The first thing a new user sees: the held-out loss keeps falling (with the old default of
    8,192 samples it was rising again after ~1,500 updates) and accuracy is reported."""
    r = shmopt.train("mlp", algo="apam", workers=2, steps=3000, eval_interval=0.2)
    losses = [h["loss"] for h in r.history[1:]]
    q = max(1, len(losses) // 4)
    second, last = losses[q:2 * q], losses[-q:]          # quarters of the run's evaluations
    assert sum(last) / len(last) < sum(second) / len(second) and losses[-1] < 0.5 * r.history[0]["loss"]
    assert r.stats["final_accuracy"] > 0.85
