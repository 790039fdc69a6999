"""Built-in problems on real data shipped in scikit-learn's wheel (no download): breast-cancer
(convex, with its exact optimum) and digits (a held-out test split, accuracy)."""
from __future__ import annotations

import pytest
import torch

import shmopt
from shmopt.errors import ProblemError
from shmopt.problems import load_problem

pytest.importorskip("sklearn", reason="scikit-learn is in the test extra: pip install -e '.[test]'")


def test_breast_cancer_sync_amsgrad_reaches_within_one_percent_of_the_exact_optimum():
    r = shmopt.train("breast-cancer", algo="sync", workers=2, steps=4000, lr=0.01)
    assert r.final_loss <= 1.01 * r.stats["optimum"]
    assert r.stats["final_accuracy"] > 0.97


def test_digits_learns_on_the_held_out_quarter():
    p = load_problem("digits")
    assert len(p.train[0]) + len(p.eval[0]) == 1797 and p.train[0].shape[1] == 64
    r = shmopt.train(p, algo="apam", workers=2, steps=2000)
    assert r.history[0]["accuracy"] < 0.3 and r.stats["final_accuracy"] > 0.9


def test_real_problems_say_which_package_they_need(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kw):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ProblemError, match=r"needs scikit-learn.*pip install 'shmopt\[data\]'"):
        load_problem("digits")
    assert torch.is_tensor(load_problem("logreg").train[0])     # the generated ones need nothing
