"""``spam-logreg``: the message reader, the stable hashed features, the L-BFGS optimum and the problem,
on small folders of messages written here in the SpamAssassin package's layout (the real package
is fetched in tests/integration/test_spam_logreg_runs.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import run_main
from spam_corpus import write_corpus

from shmopt.errors import ProblemError
from shmopt.problems import load_problem
from shmopt.problems.spam_data import bucket, hashed_bags, message_tokens, read_messages
from shmopt.problems.spam_optimum import lbfgs_optimum, to_csr


# ------------------------------------------------------------------ the reader
def test_reader_labels_by_folder_and_keeps_subject_and_body_only(tmp_path):
    root = write_corpus(tmp_path / "c", n=9)
    texts, labels, names = read_messages(root)
    assert len(texts) == 9 and labels == [int(n.startswith("spam-1/")) for n in names] and sum(labels) == 3
    tokens = message_tokens(texts[0])
    assert "hello" in tokens and "received" not in tokens and "relay" not in tokens   # headers dropped
    assert "broken" in tokens and all(t == t.lower() for t in tokens)                # undecodable bytes replaced
    (root / "file_list.json").unlink()                     # without the listing: every */*.txt, sorted
    again = read_messages(root)
    assert sorted(again[2]) == sorted(names) and again[2] == sorted(again[2])


def test_reader_refuses_empty_one_sided_and_unreadable_folders(tmp_path):
    with pytest.raises(ProblemError, match="no messages in"):
        read_messages(tmp_path)
    root = write_corpus(tmp_path / "c", n=6)
    (root / "file_list.json").write_text(json.dumps(["easy-ham-1/00001." + f"{1:032x}.txt"]))
    with pytest.raises(ProblemError, match="holds only ham; both kinds are needed"):
        read_messages(root)
    (root / "file_list.json").write_text(json.dumps(["spam-1/missing.txt", "easy-ham-1/missing.txt"]))
    with pytest.raises(ProblemError, match="cannot read message .*missing.txt"):
        read_messages(root)
    (root / "file_list.json").write_text("{not json")
    with pytest.raises(ProblemError, match="is not a JSON list of file names"):
        read_messages(root)


# ------------------------------------------------------------------ the features
def test_buckets_are_the_same_in_other_processes_whatever_their_hash_seed():
    words = ["free", "meeting", "viagra", "zürich", "x" * 40]
    mine = [bucket(w, 2**18) for w in words]
    code = ("import json, sys; from shmopt.problems.spam_data import bucket; "
            f"print(json.dumps([bucket(w, 2**18) for w in {words!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout   # another str hash
    assert json.loads(out) == mine
    assert len(set(mine)) == len(mine) and all(0 <= b < 2**18 for b in mine)


@pytest.mark.parametrize("weights", ["binary", "log"])
def test_bags_are_unit_norm_padded_with_zeros_and_truncated(weights):
    texts = ["Subject: a\n\nspam spam spam eggs", "Subject: b\n\none two three four five six", "Subject: \n\n"]
    idx, val = hashed_bags(texts, 1024, weights, max_tokens=4)
    assert idx.shape == val.shape == (3, 4)
    assert torch.allclose(val[:2].pow(2).sum(1), torch.ones(2))
    assert val[2].abs().sum() == 0                                   # an empty message: all padding
    first = idx[0, 0]
    assert (val[0] == 0).sum() == 1 and (idx[0][val[0] == 0] == first).all()   # "a", spam, eggs + 1 pad
    v = dict(zip(idx[0].tolist()[:3], val[0].tolist()[:3]))
    ratio = 1.0 if weights == "binary" else float(np.log1p(3) / np.log1p(1))     # tf 3 against tf 1
    assert v[bucket("spam", 1024)] / v[bucket("eggs", 1024)] == pytest.approx(ratio)
    assert set(idx[1].tolist()) == {bucket(w, 1024) for w in ["b", "one", "two", "three"]}  # first 4 kept


# ------------------------------------------------------------------ the optimum
def newton(X: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """F* and (w, b) of the same objective by Newton's method on a dense matrix."""
    n, d = X.shape
    A = np.hstack([X, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.r_[np.full(d, l2), 0.0]
    for _ in range(50):
        p = 1 / (1 + np.exp(-A @ theta))
        grad = A.T @ (p - y) / n + reg * theta
        hess = (A * (p * (1 - p))[:, None]).T @ A / n + np.diag(reg)
        theta -= np.linalg.solve(hess, grad)
    z = A @ theta
    value = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * theta[:d] @ theta[:d]
    return value, theta


def test_lbfgs_optimum_matches_newton_on_a_tiny_dense_problem():
    g = torch.Generator().manual_seed(0)
    n, d, width = 40, 12, 4
    idx = torch.stack([torch.randperm(d, generator=g)[:width] for _ in range(n)])
    val = torch.rand(n, width, generator=g)
    y = (torch.rand(n, generator=g) < 0.4).float()
    X = to_csr(idx, val, d)
    dense = np.zeros((n, d))
    for i in range(n):
        dense[i, idx[i].numpy()] += val[i].double().numpy()
    assert np.allclose(X.to_dense().numpy(), dense)
    for l2 in (0.1, 0.01):
        best, w, b = lbfgs_optimum(X, y, l2)
        value, theta = newton(dense, y.double().numpy(), l2)
        assert best == pytest.approx(value, rel=1e-9, abs=1e-12)
        assert np.allclose(np.r_[w.numpy(), b], theta, atol=1e-5)


# ------------------------------------------------------------------ the problem
@pytest.fixture
def small(tmp_path):
    return load_problem("spam-logreg", path=str(write_corpus(tmp_path / "c")), features=256, l2=0.01,
                        batch_size=8)


def test_problem_validates_and_its_penalty_is_unbiased(small):
    small.validate()
    assert small.num_train == 48 and len(small.eval[3]) == 12
    assert [name for name, _, _ in small.sparse_parameters] == ["bag.weight"]
    model = small.model()
    assert model.bag.weight.abs().sum() == 0 and set(small.metric_names(model)) == {"accuracy", "objective_gap"}
    with torch.no_grad():
        model.bag.weight.normal_()
    idx, val, inv_p, y = small.train
    rows = model.bag.weight.detach().double()[idx].squeeze(-1)
    per_message = 0.5 * 0.01 * (inv_p.double() * rows * rows).sum(1)
    touched = torch.unique(idx[val != 0])
    whole = 0.5 * 0.01 * model.bag.weight.detach().double()[touched].pow(2).sum()
    assert float(per_message.mean()) == pytest.approx(float(whole), rel=1e-6)   # E = (l2/2) ||w||^2


def test_the_gap_is_zero_at_the_lbfgs_solution_and_positive_elsewhere(small):
    idx, val, _, y = small.train
    _, w, b = lbfgs_optimum(to_csr(idx, val, 256), y, 0.01)
    model = small.model()
    assert small.metrics(model, small.eval)["objective_gap"] > 0.01
    with torch.no_grad():
        model.bag.weight.copy_(w.float().unsqueeze(1))
        model.bias.fill_(b)
    gap = small.metrics(model, small.eval)["objective_gap"]
    assert abs(gap) < 1e-6


def test_options_and_missing_data_are_one_line(tmp_path, capsys):
    with pytest.raises(ProblemError, match="invalid weights='tfidf'"):
        load_problem("spam-logreg", path=str(tmp_path), weights="tfidf")
    with pytest.raises(ProblemError, match="is not a folder"):
        load_problem("spam-logreg", path=str(tmp_path / "none"))
    code, _, err = run_main(["run", "spam-logreg", "--data-dir", str(tmp_path), "--algo", "hogwild",
                             "-w", "1", "--steps", "1"], capsys)
    assert code == 2 and err.strip() == (f"shmopt: error: spam-assassin data not found in "
                                         f"{tmp_path / 'spam-assassin'}: run `shmopt data fetch spam-assassin` "
                                         f"(or -o path=...)")
    assert list(tmp_path.iterdir()) == []
