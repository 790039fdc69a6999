"""CLI: the bad-input table (one line, exit 2, no side effect) and real console-script runs."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from helpers import run_main

from shmopt.memory import shm
from shmopt.problems.builtin import logreg, logreg_optimum


def list_segments():
    """This process's segments (shmopt.memory.shm.list_segments lists every owner's)."""
    return [n for n in shm.list_segments() if shm.owner_pid(n) == os.getpid()]


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "noproblem.py").write_text("x = 1\n")
    (tmp_path / "raises.py").write_text("raise ValueError('broken on import')\n")
    (tmp_path / "mismatch.py").write_text(
        "import torch\nfrom shmopt.problems import Problem\n"
        "def model():\n    return torch.nn.Linear(3, 1)\n"
        "def loss(m, b):\n    return m(b[0]).mean()\n"
        "def problem():\n    return Problem('mismatch', model, loss, (torch.randn(64, 8),), batch_size=8)\n")
    return tmp_path


BAD = [
    (["run", "logreg", "--algo", "adamw"], "unknown algorithm 'adamw'"),
    (["run", "logreg", "--workers", "0"], "invalid workers=0"),
    (["run", "logreg", "--workers", "-3"], "invalid workers=-3"),
    (["run", "logreg", "--workers", "two"], "'two' is not a valid integer"),
    (["run", "logreg", "--lr", "0"], "invalid lr=0.0"),
    (["run", "logreg", "--lr", "-0.1"], "invalid lr=-0.1"),
    (["run", "logreg", "--lr", "nan"], "invalid lr=nan"),
    (["run", "logreg", "--batch-size", "100000"], "invalid batch-size=100000: larger than the training data"),
    (["run", "logreg", "--batch-size", "0"], "invalid batch-size=0"),
    (["run", "logreg", "--max-staleness", "-1"], "invalid max-staleness=-1"),
    (["run", "logreg", "--steps", "0"], "invalid steps=0"),
    (["run", "logreg", "--time-limit", "0"], "invalid time-limit=0.0"),
    (["run", "logreg", "--target-loss", "nan"], "invalid target-loss=nan"),
    (["run", "logreg", "--protocol", "carrier-pigeon"], "invalid protocol='carrier-pigeon'"),
    (["run", "logreg", "--algo", "sync", "--protocol", "direct"], "invalid protocol='direct' for sync"),
    (["run", "logreg", "--algo", "apam", "--rule", "sgd"], "invalid rule='sgd' for apam"),
    (["run", "logreg", "--algo", "apam", "--k", "2"], "--k applies to server protocols"),
    (["run", "logreg", "--algo", "sync", "--k", "3", "--workers", "2"], "invalid k=3"),
    (["run", "logreg", "--read", "sideways"], "invalid read='sideways'"),
    (["run", "logreg", "--start-method", "fork"], "invalid start-method='fork'"),
    (["run", "logreg", "--eps", "-1"], "eps"),
    (["run", "logreg", "--beta1", "1.0"], "betas"),
    (["run", "logreg", "--momentum", "0.9"], "momentum belongs to rule sgd"),
    (["run", "logreg", "--lr-policy", "cosine"], "invalid lr-policy='cosine'"),
    (["run", "logreg", "--lr-policy", "dutta"], "needs --lr-c"),
    (["run", "logreg", "--lr-policy", "dutta", "--lr-c", "0"], "invalid lr-c=0.0"),
    (["run", "logreg", "--algo", "sync", "--lr-policy", "staleness"], "for asynchronous algorithms"),
    (["run", "logreg", "--threads", "0"], "invalid threads=0"),
    (["run", "logreg", "--device", "gpu"], "invalid device='gpu': choose cpu, cuda, cuda:N or auto"),
    (["run", "logreg", "--device", "cuda:x"], "invalid device='cuda:x'"),
    (["run", "logreg", "--eval-interval", "0"], "invalid eval-interval=0.0"),
    (["run", "logreg", "--bogus"], "No such option '--bogus'"),
    (["run", "logreg", "-o", "n"], "n"),
    (["run", "logreg", "-o", "wings=2"], "wings"),
    (["run", "nosuchproblem"], "unknown problem 'nosuchproblem'"),
    (["run", "missing_file.py"], "missing_file.py"),
    (["run", "{tmp}/noproblem.py"], "no problem() function"),
    (["run", "{tmp}/raises.py"], "raised on import: ValueError: broken on import"),
    (["run", "{tmp}/mismatch.py"], "the loss failed on a batch"),
    (["run"], "Missing argument 'PROBLEM'"),
    (["run", "logreg", "--algo", "k-sync", "--workers", "4", "--k", "5"], "invalid k=5: must be 1 <= k <= workers (4)"),
    (["run", "logreg", "--algo", "k-async", "--k", "0"], "invalid k=0"),
    (["run", "logreg", "--delay", "exp:-1"], "invalid delay 'exp:-1'"),
    (["run", "logreg", "--delay", "gamma:1"], "invalid delay 'gamma:1'"),
    (["run", "logreg", "--delay", "pareto:0.1"], "invalid delay 'pareto:0.1'"),
    (["run", "logreg", "--slow", "7:2"], "7:2"),
    (["run", "logreg", "--slow", "0:fast"], "0:fast"),
    (["run", "logreg", "--algo", "k-async", "--lr-policy", "dutta", "--lr-c", "-1"], "invalid lr-c=-1.0"),
    (["compare", "logreg", "--algos", "sync,,apam"], "invalid algos"),
    (["compare", "logreg", "--algos", "sync,k-async:x"], "K must be a positive integer"),
    (["compare", "logreg", "--algos", "sync,adamw"], "unknown algorithm 'adamw'"),
    (["run", "logreg", "--algo", "lsgd", "--lam", "1.5"], "invalid lam=1.5: must be in [0, 1]"),
    (["run", "logreg", "--algo", "lsgd", "--lam", "-0.1"], "invalid lam=-0.1"),
    (["run", "logreg", "--algo", "lsgd", "--workers", "4", "--groups", "3"], "invalid groups=3: must divide"),
    (["run", "logreg", "--algo", "lsgd", "--tau", "0"], "invalid tau=0"),
    (["run", "logreg", "--algo", "easgd", "--tau", "-2"], "invalid tau=-2"),
    (["run", "logreg", "--algo", "lsgd", "--window", "99"], "invalid window=99"),
    (["run", "logreg", "--algo", "lsgd", "--trigger", "sometimes"], "invalid trigger='sometimes'"),
    (["run", "logreg", "--algo", "easgd", "--beta", "0"], "invalid beta=0.0"),
    (["run", "logreg", "--algo", "lsgd", "--replica-init", "random"], "invalid replica-init='random'"),
    (["run", "logreg", "--algo", "lsgd", "--lr-policy", "staleness"], "replicas take none"),
    (["theory", "--algo", "k-sync", "--workers", "4", "--k", "9", "--delay", "exp:0.02"], "invalid k=9"),
    (["theory", "--algo", "k-sync", "--workers", "4", "--k", "2", "--delay", "exp"], "invalid delay 'exp'"),
    (["theory", "--algo", "k-turbo", "--workers", "4", "--k", "2", "--delay", "none"], "k-turbo"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a[1:]) or "no-args" for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(args, needle, bad_files, capsys):
    before = list_segments()
    args = [a.replace("{tmp}", str(bad_files)) for a in args]
    code, out, err = run_main(args, capsys)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("shmopt: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert list_segments() == before


def test_algos_info_clean(capsys):
    code, out, _ = run_main(["algos"], capsys)
    assert code == 0 and [ln.split()[0] for ln in out.splitlines()] == [
        "hogwild", "apam", "sync", "k-sync", "k-batch-sync", "k-async", "k-batch-async", "lsgd", "easgd",
        "local-sgd"]
    code, out, _ = run_main(["info"], capsys)
    assert code == 0 and "/dev/shm free" in out and "torch" in out and "CUDA devices" in out
    code, out, _ = run_main(["clean"], capsys)
    assert code == 0 and out.startswith("removed ")


def test_run_json_in_process(capsys, tmp_path):
    log = tmp_path / "samples.jsonl"
    code, out, err = run_main(["run", "quadratic", "--workers", "2", "--steps", "300", "--json",
                               "--log", str(log), "--save", str(tmp_path / "model.pt")], capsys)
    assert code == 0, err
    st = json.loads(out.strip().splitlines()[-1])
    for key in ("algo", "rule", "workers", "updates", "gradients", "dropped", "startup_s", "wall_s",
                "samples_per_s", "iteration_time_mean_s", "staleness_mean", "staleness_max",
                "final_loss"):
        assert key in st
    assert st["updates"] >= 300 and st["iteration_time_mean_s"] == pytest.approx(st["wall_s"] / st["updates"])
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows[0]["updates"] == 0 and rows[-1]["updates"] == st["updates"]
    assert {"t", "updates", "loss", "samples_per_s", "staleness_mean"} <= set(rows[0])
    import torch
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) == {"weight"}


def test_theory_json_gives_the_closed_form(capsys):
    code, out, _ = run_main(["theory", "--algo", "k-sync", "--workers", "4", "--k", "2", "--delay",
                             "exp:0.02", "--json"], capsys)
    r = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and r["method"] == "closed-form"
    assert r["expected_iteration_time_s"] == pytest.approx((1 / 4 + 1 / 3) * 0.02)
    code, out, _ = run_main(["theory", "--algo", "k-async", "--workers", "4", "--k", "2", "--delay",
                             "shifted-exp:0.01:0.02"], capsys)
    assert code == 0 and "simulation" in out and "E[T] =" in out


def test_compare_writes_one_combined_log(capsys, tmp_path):
    out_csv = tmp_path / "cmp.csv"
    code, out, err = run_main(["compare", "quadratic", "--algos", "sync,k-async:1,hogwild", "-w", "2",
                               "--steps", "200", "--rule", "sgd", "--lr", "0.05", "--eval-interval", "0.1",
                               "--target-loss", "0.5", "--out", str(out_csv)], capsys)
    assert code == 0, err
    import csv
    rows = list(csv.DictReader(out_csv.open()))
    assert {r["label"] for r in rows} == {"sync", "k-async (K=1)", "hogwild"}
    assert all(float(r["t"]) >= 0 for r in rows)
    assert "time to loss 0.5" in out
    png = tmp_path / "cmp.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in out
    again = tmp_path / "again.png"
    code, out, err = run_main(["plot", str(out_csv), "--out", str(again), "--title", "t"], capsys)
    assert code == 0 and again.exists() and again.stat().st_size > 1000 and f"plot: {again}" in out


def test_compare_without_matplotlib_says_how_to_get_the_plot(capsys, tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out_csv = tmp_path / "cmp.csv"
    code, out, err = run_main(["compare", "quadratic", "--algos", "hogwild", "--steps", "50",
                               "--out", str(out_csv)], capsys)
    assert code == 0 and out_csv.exists() and not (tmp_path / "cmp.png").exists() and "pip install" in out
    code, _, err = run_main(["plot", str(out_csv)], capsys)
    assert code == 1 and "pip install" in err


def test_clean_removes_a_stale_segment_and_keeps_a_live_one(capsys):
    code = ("import os, secrets; from multiprocessing import shared_memory as s, resource_tracker as r;"
            "n=f'shmopt_{os.getpid()}_{secrets.token_hex(8)}'; m=s.SharedMemory(n, create=True, size=64);"
            "r.unregister(m._name, 'shared_memory'); print(n)")
    stale = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    from shmopt.memory import Arena, Layout
    live = Arena.create(Layout.build([("x", (4,), "float32")]))
    try:
        assert stale in shm.list_segments() and live.name in shm.list_segments()
        rc, out, _ = run_main(["clean"], capsys)
        assert rc == 0 and stale in out and stale not in shm.list_segments()
        assert live.name in shm.list_segments()                 # a live owner's segment stays
    finally:
        live.close()


@pytest.mark.timeout_s(300)
def test_console_script_apam_logreg_reaches_the_exact_optimum():
    """The issue's acceptance run, as a user types it: within 1% of the exact optimum."""
    exe = pathlib.Path(sys.executable).parent / "shmopt"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "shmopt.cli"]
    proc = subprocess.run(cmd + ["run", "logreg", "--algo", "apam", "--workers", "2", "--json"],
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout.strip().splitlines()[-1])
    prob = logreg()                                     # same data as the CLI's default problem
    optimum = logreg_optimum(*prob.train, l2=1e-3)      # computed here, independently
    assert st["algo"] == "apam" and st["workers"] == 2
    assert optimum <= st["final_loss"] <= 1.01 * optimum, (st["final_loss"], optimum)
