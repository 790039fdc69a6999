"""Metrics beyond the run (#14): accuracy in `shmopt compare`'s log, plot and time-to-target,
and the optional TensorBoard output (--tensorboard DIR)."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from shmopt.cli import cli
from shmopt.errors import ConfigError
from shmopt.tensorboard import check_tensorboard


def test_compare_logs_and_plots_accuracy_and_its_time_to_target(tmp_path):
    out = tmp_path / "cmp.csv"
    res = CliRunner().invoke(cli, ["compare", "logreg", "--algos", "sync,hogwild", "-w", "2",
                                   "--steps", "300", "--target-accuracy", "0.8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert {r["label"] for r in rows} == {"sync", "hogwild"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert float(rows[-1]["accuracy"]) > 0.8
    assert "time to accuracy 0.8:" in res.output
    pytest.importorskip("matplotlib")
    assert (tmp_path / "cmp.png").stat().st_size > 10_000       # two panels: loss and accuracy


def test_tensorboard_gets_one_scalar_per_evaluation(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in the test extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log = tmp_path / "log.jsonl"
    res = CliRunner().invoke(cli, ["run", "logreg", "--algo", "apam", "-w", "2", "--steps", "400",
                                   "--eval-interval", "0.05", "--log", str(log),
                                   "--tensorboard", str(tmp_path / "tb"), "--json"])
    assert res.exit_code == 0, res.output
    history = [json.loads(line) for line in log.open()]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    accuracy = acc.Scalars("eval/accuracy")
    assert [e.step for e in accuracy] == [h["updates"] for h in history]
    assert [round(e.value, 5) for e in accuracy] == [round(h["accuracy"], 5) for h in history]
    assert {"eval/loss", "train/samples_per_s", "train/staleness_mean"} <= set(acc.Tags()["scalars"])


def test_tensorboard_path_and_package_are_checked_before_training(tmp_path, monkeypatch, capsys):
    from shmopt.cli import main
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file; give a folder"):
        check_tensorboard(str(tmp_path / "file"))
    with pytest.raises(SystemExit) as e:
        main(["run", "logreg", "--steps", "10", "--tensorboard", str(tmp_path / "no" / "tb")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    import builtins
    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(
        ImportError(name)) if name == "tensorboard" else real(name, *a, **k))
    with pytest.raises(ConfigError, match=r"needs the tensorboard package: pip install 'shmopt\[tensorboard\]'"):
        check_tensorboard(str(tmp_path / "tb"))
    assert not (tmp_path / "tb").exists()
