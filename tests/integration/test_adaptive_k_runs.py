"""Adaptive K (--k adaptive) in real runs: the K schedule of the JSON summary, of the log and of
the printed summary agree, K only rises along the ladder, and the run trains. When K rises depends
on how many evaluations the run gets, i.e. on speed: the schedule itself is tested as a pure
function in tests/unit/test_adaptive_k.py, the rise over time in bench/test_adaptive_k.py."""
from __future__ import annotations

import json
import re

import pytest

from shmopt.cli import main
from shmopt.problems import load_problem


@pytest.fixture(scope="module")
def logreg():
    return load_problem("logreg")


def _check_schedule(sched: list, ladder: list[int]) -> None:
    """Starts at K = 1 on update 0; time and updates never go back; K only rises, along the ladder."""
    assert sched[0][1:] == [0, ladder[0]] and sched[0][0] >= 0
    ts, us, kk = zip(*sched)
    assert list(ts) == sorted(ts) and list(us) == sorted(us)
    assert list(kk) == sorted(set(kk)) and set(kk) <= set(ladder)


@pytest.mark.parametrize("algo", [pytest.param("k-sync", marks=pytest.mark.slow), "k-async"])
def test_adaptive_run_logs_its_k_schedule_and_trains(algo, tmp_path, capsys, logreg):
    log = tmp_path / "curve.jsonl"
    with pytest.raises(SystemExit) as info:
        main(["run", "logreg", "--algo", algo, "--k", "adaptive", "-w", "2", "--delay", "exp:0.002",
              "--rule", "sgd", "--lr", "0.1", "--time-limit", "5", "--eval-interval", "0.2",
              "--k-patience", "1", "--log", str(log), "--json"])
    assert info.value.code == 0
    st = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sched = st["k_schedule"]
    assert st["k"] == "adaptive" and st["k_ladder"] == [1, 2]
    _check_schedule(sched, st["k_ladder"])
    assert st["k_final"] == sched[-1][2]
    # each update averages K gradients, K in {1, 2}
    assert st["updates"] <= st["applied"] <= 2 * st["updates"]
    if st["k_final"] == 2 and sched[-1][1] < st["updates"]:
        assert st["applied"] > st["updates"]           # updates after the rise averaged two
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    for row in lines:                                 # each sample has the K of the schedule
        assert row["k"] == [k for t, _, k in sched if t <= row["t"]][-1]
    assert lines[0]["k"] == 1 and lines[-1]["k"] == st["k_final"]
    assert st["final_loss"] < lines[0]["loss"]


def test_the_printed_summary_shows_k_over_time(tmp_path, capsys):
    """The human summary (no --json) has a K line: the schedule the log samples also follow."""
    log = tmp_path / "curve.jsonl"
    with pytest.raises(SystemExit) as info:
        main(["run", "logreg", "--algo", "k-sync", "--k", "adaptive", "-w", "2", "--delay", "exp:0.002",
              "--rule", "sgd", "--lr", "0.1", "--steps", "300", "--eval-interval", "0.2",
              "--k-patience", "1", "--log", str(log)])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "k-sync k=adaptive" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("K ") and " from " in x)
    entries = re.findall(r"(\d+) from (\d+\.\d) s", line)
    ks = [int(k) for k, _ in entries]
    assert ks and ks[0] == 1 and ks == sorted(set(ks)) and set(ks) <= {1, 2}
    assert [float(t) for _, t in entries] == sorted(float(t) for _, t in entries)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert {r["k"] for r in lines} <= set(ks) and lines[-1]["k"] == ks[-1]
