"""`shmopt advise` against real runs: every advised (algo, K) runs as printed, and where the
advice's staleness is exact (the synchronous variants: 0) the run measures exactly that. How
closely the predicted time per update matches the measured one depends on the machine's speed:
bench/test_advise_accuracy.py measures it."""
from __future__ import annotations

import json

import pytest
from helpers import run_main

P, DELAY = 4, "exp:0.02"


def _measured(capsys, algo: str, k: int, steps: int) -> dict:
    code, out, err = run_main(["run", "quadratic", "--algo", algo, "--k", str(k), "-w", str(P),
                               "--delay", DELAY, "--steps", str(steps), "--json", "-q"], capsys)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout_s(120)
def test_advised_variants_run_as_printed_and_exact_staleness_holds(capsys) -> None:
    code, out, err = run_main(["advise", "quadratic", "-w", str(P), "--delay", DELAY,
                               "--iterations", "5000", "--json"], capsys)
    assert code == 0, err
    a = json.loads(out)
    rows = a["rows"]
    best, worst = rows[0], rows[-1]
    assert (a["recommended"]["algo"], a["recommended"]["k"]) == (best["algo"], best["k"])
    assert a["schedule"]["target"] == "constant"      # the K-variants run sgd (docs/algorithms.md)
    times = [r["time_per_update_s"] for r in rows]
    assert times == sorted(times)
    for row, steps in ((best, 150), (worst, 50)):
        st = _measured(capsys, row["algo"], row["k"], steps)
        assert st["updates"] >= steps and st["variant"] == row["algo"] and st["k"] == row["k"]
        if row["algo"] in ("k-sync", "k-batch-sync"):      # never a stale gradient: exact
            assert st["staleness_mean"] == row["staleness"] == 0
