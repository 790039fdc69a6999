"""examples/movielens_own_loop.py: a user's own Hogwild loop with shmopt's shared optimizers on the
MovieLens tables, run on a small low-rank ratings database written here in the package's format
(R's lazy-load database), and on the real package where apt-get can fetch it (slow)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_movielens_data import XDR, write_lazyload

from shmopt.problems import packages

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "movielens_own_loop.py"


def run_example(*args: str) -> subprocess.CompletedProcess:
    """The example as a user runs it (a script: its spawned processes re-import it as __mp_main__)."""
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True,
                          timeout=240, stdin=subprocess.DEVNULL)


def low_rank_ratings(folder: Path, n: int = 3000, users: int = 40, items: int = 60) -> Path:
    """Ratings 0.5 .. 5 of a rank-2 model plus noise, as a ``movielens`` data frame."""
    rng = np.random.default_rng(1)
    u, i = rng.integers(0, users, n), rng.integers(0, items, n)
    pu, qi = rng.normal(size=(users, 2)), rng.normal(size=(items, 2))
    r = np.clip(np.round(2 * (3.5 + (pu[u] * qi[i]).sum(1) + 0.2 * rng.normal(size=n))) / 2, 0.5, 5.0)
    w = XDR()
    frame = w.data_frame({"userId": w.ints((u + 1).tolist()), "movieId": w.ints((i * 3 + 1).tolist()),
                          "rating": w.reals(r.tolist())}, n)
    return write_lazyload(folder, {"movielens": XDR.header(frame)})


def _rmse(out: str) -> tuple[float, float]:
    m = re.search(r"held-out RMSE: ([\d.]+) -> ([\d.]+)", out)
    assert m, out
    return float(m.group(1)), float(m.group(2))


@pytest.mark.timeout_s(120)
@pytest.mark.slow
def test_two_processes_lower_the_held_out_rmse_with_every_update_counted(tmp_path):
    rdb = low_rank_ratings(tmp_path / "own")
    proc = run_example("--path", str(rdb), "--processes", "2", "--steps", "150", "--batch", "64",
                       "--lr", "0.1", "--optimizer", "rowwise-adagrad")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-2000:]
    before, after = _rmse(out)
    assert "2 processes x 150 steps (300 updates of the rowwise-adagrad tables)" in out
    assert after < before - 0.1


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("movielens_own_loop", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)               # stops before any process starts: in this one
    assert example.main(["--data-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "shmopt data fetch movielens" in err


@pytest.mark.slow
@pytest.mark.timeout_s(300)
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get not on PATH: cannot fetch r-cran-dslabs")
def test_on_the_real_package(tmp_path):
    packages.fetch("movielens", tmp_path)
    proc = run_example("--data-dir", str(tmp_path), "--steps", "400")
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = _rmse(proc.stdout)
    assert "100,004 ratings" in proc.stdout and after < 0.95 < before
