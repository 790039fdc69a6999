"""Bad input refused before anything starts (found by trying shmopt as a new user would; each test
failed before its fix): unwritable save and log paths, compare outputs, an infinite Pareto mean,
an invalid problem object."""
from __future__ import annotations

import pathlib

import pytest
import torch
from helpers import engine_children, run_main

import shmopt
from shmopt import Config, Engine, Problem
from shmopt.errors import ConfigError, ProblemError
from shmopt.memory import list_segments

HERE = pathlib.Path(__file__).parent
FAULTY = str(HERE / "problems_for_tests" / "faulty.py")


@pytest.mark.timeout_s(60)
def test_an_unwritable_save_path_is_refused_before_training(capsys, tmp_path):
    """Before: the run trained to the end and then died with a traceback, losing the model."""
    code, out, err = run_main(["run", "logreg", "--time-limit", "600", "--save",
                               str(tmp_path / "no" / "such" / "model.pt")], capsys)
    assert code == 2 and out == ""
    assert err.startswith("shmopt: error: invalid save=") and "does not exist" in err
    assert len(err.strip().splitlines()) == 1 and not engine_children()


@pytest.mark.parametrize("flag", ["--out", "--plot"])
def test_compare_outputs_are_checked_before_the_first_run(capsys, tmp_path, flag):
    code, _, err = run_main(["compare", "logreg", "--algos", "apam,hogwild", "--time-limit", "600",
                             flag, str(tmp_path / "missing" / "f.csv")], capsys)
    assert code == 2 and f"invalid {flag[2:]}=" in err and not engine_children()


def test_a_log_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        shmopt.train("logreg", log=str(tmp_path), steps=10)


@pytest.mark.parametrize("alpha", ["1", "0.5"])
def test_pareto_with_an_infinite_mean_is_refused(alpha, capsys):
    with pytest.raises(ConfigError, match=r"ALPHA > 1"):
        shmopt.train("logreg", delay=f"pareto:0.01:{alpha}", steps=10)
    code, _, err = run_main(["run", "logreg", "--delay", f"pareto:0.01:{alpha}"], capsys)
    assert code == 2 and "infinite mean" in err


def _bad_problem() -> Problem:
    x = torch.randn(32, 3)
    return Problem("bad", _linear, _vector_loss, (x, x.sum(1)), batch_size=8)


def _linear():
    return torch.nn.Linear(3, 1)


def _vector_loss(model, batch):
    x, y = batch
    return (model(x).squeeze(-1) - y) ** 2          # not reduced: invalid


@pytest.mark.parametrize("entry", ["train", "engine"])
def test_a_problem_object_is_validated_before_any_process(entry):
    before = set(list_segments())
    with pytest.raises(ProblemError, match="scalar"):
        if entry == "train":
            shmopt.train(_bad_problem(), steps=10)
        else:
            Engine(_bad_problem(), Config(steps=10))
    assert not engine_children() and set(list_segments()) == before
