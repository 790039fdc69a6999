"""``wordnet-kg`` in the engine and the CLI: a few steps on wndb files written here, the one-line
refusal when the data is missing, the own-loop example, and the real WordNet package (fetched
with apt-get where it is: CI has it)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_main
from wndb import chain_graph, write_wndb

import shmopt
from shmopt.problems import load_problem, packages

HAS_APT = shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wordnet_own_loop.py"
SMALL = {"n_test": 6, "n_eval": 6, "batch_size": 16, "dim": 8, "negatives": 4}


@pytest.mark.parametrize("algo", ["hogwild", pytest.param("apam", marks=pytest.mark.slow)])
def test_a_few_steps_train_the_entity_table_by_rows_and_report_the_ranking(tmp_path, algo):
    p = load_problem("wordnet-kg", path=str(write_wndb(tmp_path, chain_graph(40))), **SMALL)
    r = shmopt.train(p, algo=algo, workers=2, steps=40, table_rule="rowwise-adagrad", table_lr=0.1)
    st = r.stats
    assert [t["name"] for t in st["tables"]] == ["entity.weight"] and st["rows_touched"] > 0
    assert set(st["final_metrics"]) == {"mrr", "hits@10"}
    assert 0.0 < st["final_metrics"]["mrr"] <= 1.0 and r.history[-1]["loss"] < r.history[0]["loss"]


def test_cli_without_the_data_exits_2_naming_the_fetch(tmp_path, capsys):
    code, _, err = run_main(["run", "wordnet-kg", "--data-dir", str(tmp_path), "--algo", "hogwild",
                             "-w", "1", "--steps", "1"], capsys)
    assert code == 2 and err.strip() == (f"shmopt: error: wordnet data not found in {tmp_path / 'wordnet'}: "
                                         "run `shmopt data fetch wordnet` (or -o path=...)")
    code, _, err = run_main(["run", "wordnet-kg", "-o", "model=rotate", "--steps", "1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "invalid model='rotate'" in err


def test_the_cli_summary_prints_the_ranking_metrics(tmp_path, capsys):
    folder = write_wndb(tmp_path, chain_graph(40))
    opts = [x for k, v in SMALL.items() for x in ("-o", f"{k}={v}")]
    code, out, _ = run_main(["run", "wordnet-kg", "-o", f"path={folder}", *opts, "--algo", "hogwild", "-w", "1",
                             "--steps", "20"], capsys)
    line = next(row for row in out.splitlines() if row.strip().startswith("metrics"))
    assert code == 0 and "mrr " in line and "hits@10 " in line


@pytest.mark.slow
def test_the_own_loop_example_trains_with_shared_optimizers(tmp_path):
    folder = write_wndb(tmp_path, chain_graph(40))
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--path", str(folder), "--steps", "20",
                           "--n-test", "6", "--n-eval", "6", "--batch-size", "16"],
                          capture_output=True, text=True, timeout=200, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "40 steps of 16 triples by 2 processes" in proc.stdout and "filtered MRR" in proc.stdout


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    if not HAS_APT:
        pytest.skip("apt-get/dpkg-deb not on PATH: cannot fetch Debian's wordnet-base")
    root = tmp_path_factory.mktemp("data")
    packages.fetch("wordnet", root)
    return root


@pytest.mark.timeout_s(300)
def test_the_real_wordnet_graph_and_a_few_steps_on_it(fetched):
    p = load_problem("wordnet-kg", data_dir=str(fetched), n_eval=20, batch_size=64)
    assert p.num_train == 285_348 - 5_000 and len(p.eval[0]) == 20
    assert p.description.startswith("WordNet (117,659 synsets, 285,348 triples, 22 relations)")
    r = shmopt.train(p, algo="hogwild", workers=1, steps=5, table_rule="rowwise-adagrad", table_lr=0.1)
    assert r.stats["tables"][0]["rows"] == 117_659 and 0.0 < r.stats["final_metrics"]["mrr"] <= 1.0
