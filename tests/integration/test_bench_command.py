"""`shmopt bench` (shmopt.quickbench): structure of the result, the table and the JSON, the
progress lines and the errors; with tiny settings (timings are not checked)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from shmopt.errors import ConfigError
from shmopt.quickbench import bench_command, default_workers, format_table, run_quick_bench

TINY = ["--seconds", "0.3", "--workers", "1", "--problems", "logreg", "--algos", "apam"]


def _check_result(result: dict) -> None:
    assert set(result) >= {"machine", "settings", "scaling", "kernel", "forkserver_start_s", "total_s"}
    assert result["settings"] == {"seconds": 0.3, "workers": [1], "problems": ["logreg"],
                                  "algos": ["apam"], "kernel_params": 1_000_000}
    assert result["machine"]["cores"] >= 1 and result["machine"]["torch"]
    (row,) = result["scaling"]
    assert row["problem"] == "logreg" and row["algo"] == "apam" and row["workers"] == 1
    assert row["samples_per_s"] > 0 and row["updates"] > 0 and row["startup_s"] > 0
    assert row["speedup"] == pytest.approx(1.0)
    k = result["kernel"]
    assert k["params"] == 1_000_000 and k["shmopt_shared_ms"] > 0 and k["torch_forloop_ms"] > 0
    assert k["ratio_vs_forloop"] > 0
    if result["machine"]["fused_amsgrad"]:
        assert k["torch_fused_ms"] > 0 and k["ratio_vs_fused"] > 0


def test_run_quick_bench_and_table():
    lines: list[str] = []
    result = run_quick_bench(seconds=0.3, workers=[1], problems=("logreg",), algos=("apam",),
                             progress=lines.append)
    _check_result(result)
    json.dumps(result)                                   # JSON-serialisable as it is
    # one progress line per finished measurement: warm-up, the one run, the kernel
    assert len(lines) == 3
    assert lines[1].startswith("logreg apam 1 worker:") and "samples/s" in lines[1]
    assert lines[2].startswith("AMSGrad update")
    table = format_table(result)
    rows = table.splitlines()
    header = next(i for i, line in enumerate(rows) if line.startswith("problem"))
    assert rows[header].split() == ["problem", "algo", "workers", "samples/s", "speed-up",
                                    "start-up", "staleness"]
    assert rows[header + 2].split()[:3] == ["logreg", "apam", "1"]
    assert rows[header + 2].split()[4] == "1.00x"
    assert "AMSGrad update of 1,000,000 float32 parameters" in table
    assert "shmopt rule, shared memory" in table


def test_bench_command_json_and_table():
    runner = CliRunner()
    res = runner.invoke(bench_command, TINY + ["--json"])
    assert res.exit_code == 0, res.output
    assert res.stderr == ""                              # --json: no progress
    _check_result(json.loads(res.stdout.strip().splitlines()[-1]))

    res = runner.invoke(bench_command, TINY)
    assert res.exit_code == 0, res.output
    progress = res.stderr.strip().splitlines()
    assert len(progress) == 3 and progress[1].startswith("logreg apam 1 worker:")
    assert "samples/s" in res.stdout and "speed-up" in res.stdout and "logreg" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["--workers", "0"], "--workers"),
    (["--workers", "one,two"], "--workers"),
    (["--seconds", "0"], "seconds"),
    (["--algos", "nope"], "unknown algorithm"),
    (["--problems", "no_such_problem_xyz"], "no_such_problem_xyz"),
])
def test_bench_command_errors_exit_2_without_traceback(args, message):
    res = CliRunner().invoke(bench_command, ["--workers", "1", *args])
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_run_quick_bench_validates_before_starting_anything():
    with pytest.raises(ConfigError, match="workers"):
        run_quick_bench(workers=[0])
    with pytest.raises(ConfigError, match="seconds"):
        run_quick_bench(seconds=float("nan"))
    with pytest.raises(ConfigError, match="algorithm"):
        run_quick_bench(algos=("apam", "bogus"))


def test_default_workers():
    assert default_workers(1) == [1, 2]
    assert default_workers(2) == [1, 2]
    assert default_workers(8) == [1, 2, 8]
