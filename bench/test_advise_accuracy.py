"""How well `shmopt advise` predicts: the predicted ratio of time per update between its best and
its worst variant against the ratio measured by running both (4 workers, exponential delays of
mean 20 ms on the quadratic), and the measured staleness of the best against its formula.

Moved out of the test suite: the measured ratio depends on the machine's speed and load. The
figures go into ``benchmark.extra_info``; nothing here asserts a timing.

    python -m pytest bench/test_advise_accuracy.py --benchmark-json=bench/results/advise.json
"""
from __future__ import annotations

import json
import statistics

import pytest

from shmopt.cli import main

pytestmark = pytest.mark.usefixtures("no_leaks")

P, DELAY = 4, "exp:0.02"


def _cli(args, capsys) -> dict:
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    assert info.value.code == 0, out.err
    return json.loads(out.out.strip().splitlines()[-1])


def _run(capsys, algo: str, k: int, steps: int) -> dict:
    return _cli(["run", "quadratic", "--algo", algo, "--k", str(k), "-w", str(P), "--delay", DELAY,
                 "--steps", str(steps), "--json", "-q"], capsys)


def test_advise_predicted_against_measured_time_per_update(benchmark, quick, capsys, warm_forkserver):
    rounds = 1 if quick else 3
    advice = _cli(["advise", "quadratic", "-w", str(P), "--delay", DELAY, "--iterations", "5000",
                   "--json"], capsys)
    best, worst = advice["rows"][0], advice["rows"][-1]
    predicted = worst["time_per_update_s"] / best["time_per_update_s"]
    ratios, staleness = [], []

    def measure():
        for _ in range(rounds):
            fast = _run(capsys, best["algo"], best["k"], 150)
            slow = _run(capsys, worst["algo"], worst["k"], 50)
            ratios.append(slow["iteration_time_mean_s"] / fast["iteration_time_mean_s"])
            staleness.append(fast["staleness_mean"])

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(kind="advise", workers=P, delay=DELAY, best=[best["algo"], best["k"]],
                                worst=[worst["algo"], worst["k"]], predicted_ratio=predicted,
                                measured_ratio=statistics.median(ratios), measured_ratios=ratios,
                                predicted_staleness=best["staleness"],
                                measured_staleness=statistics.median(staleness))
