"""`shmopt advise` without a training run: the fit, the time model, the staleness formulas, the
ranking, the table, and bad input (one line, exit 2, nothing started)."""
from __future__ import annotations

import heapq
import itertools
import math

import numpy as np
import pytest
from helpers import run_main

from shmopt.errors import ConfigError
from shmopt.strategies.delays import Delay, parse_delay
from shmopt.strategies.k_ranking import expected_staleness, fit_shifted_exponential, rank_variants, time_model
from shmopt.strategies.server import Arrival, KAggregator, WorkerMode


# ------------------------------------------------------------------------------------- the fit
@pytest.mark.parametrize("shift, scale", [(0.002, 0.0005), (0.0, 0.01), (0.03, 0.03)])
def test_fit_recovers_a_known_shifted_exponential(shift: float, scale: float) -> None:
    rng = np.random.default_rng(7)
    x = shift + rng.exponential(scale, 5000)
    f = fit_shifted_exponential(x)
    assert f.n == 5000
    assert f.shift == pytest.approx(shift, abs=0.01 * scale)       # E[min] - shift = scale/n
    assert f.scale == pytest.approx(scale, rel=0.05)
    assert f.std == pytest.approx(scale, rel=0.08)                 # the model's std is its scale
    assert f.spec == parse_delay(f.spec).spec and f.spec.startswith("shifted-exp:")


def test_fit_refuses_bad_samples() -> None:
    for bad in ([1.0], [], [0.1, float("nan")], [0.1, -0.2], ["a", "b"]):
        with pytest.raises(ConfigError):
            fit_shifted_exponential(bad)


def test_time_model_is_exact_where_it_can_be_and_keeps_mean_and_variance() -> None:
    f = fit_shifted_exponential([0.001, 0.002, 0.003, 0.006])      # s = 1 ms, beta = 2 ms
    m = time_model(f, "none")
    assert m.delay == Delay("shifted-exp", (0.001, 0.002)) and m.compute == 0.0
    m = time_model(f, "shifted-exp:0.01:0.02")
    shift, sigma = m.delay.params
    assert sigma == pytest.approx(math.hypot(0.002, 0.02), rel=1e-3)      # variance kept
    assert shift + sigma == pytest.approx(0.001 + 0.002 + 0.01 + 0.02, rel=1e-3)   # mean kept
    m = time_model(f, "pareto:0.01:3")
    assert m.delay.kind == "pareto" and m.compute == pytest.approx(0.003)
    const = fit_shifted_exponential([0.004, 0.004])
    assert time_model(const, "none").delay.kind == "none"
    assert time_model(const, "none").compute == pytest.approx(0.004)


# ------------------------------------------------------------------------------------- staleness
def simulated_staleness(variant: str, p: int, k: int, updates: int, seed: int) -> float:
    """Mean staleness of applied gradients, learners with exponential times driven by the engine's
    own K-of-P aggregator (the decisions, versions and staleness are its)."""
    agg = KAggregator(variant, p, k)
    rng = np.random.default_rng(seed)
    seq = itertools.count()
    events: list[tuple[float, int, int]] = []
    on_version = [0] * p
    version, taus = 0, []

    def start(r: int, t: float) -> None:
        on_version[r] = version
        heapq.heappush(events, (t + rng.exponential(1.0), next(seq), r))

    for r in range(p):
        start(r, 0.0)
    while version < updates:
        t, _, r = heapq.heappop(events)
        agg.offer(Arrival(r, on_version[r]), version)
        if agg.ready():
            decision = agg.take(version)
            version += 1
            if version > 200:                 # warm-up
                taus += decision.staleness
            for q in decision.release:
                start(q, t)
        if agg.mode is WorkerMode.PULL:
            start(r, t)
    return float(np.mean(taus))


@pytest.mark.parametrize("variant, p, k", [("k-async", 4, 1), ("k-async", 4, 2), ("k-async", 5, 3),
                                           ("k-batch-async", 4, 1), ("k-batch-async", 4, 3),
                                           ("k-batch-async", 5, 2)])
def test_staleness_formulas_match_the_aggregator_driven_simulation(variant: str, p: int, k: int) -> None:
    value, _ = expected_staleness(variant, p, k)
    assert simulated_staleness(variant, p, k, 20_000, seed=p * 10 + k) == pytest.approx(value, abs=0.06)
    assert expected_staleness("k-sync", p, k)[0] == expected_staleness("k-batch-sync", p, k)[0] == 0.0


def test_ranking_is_by_time_per_update_and_the_bound_filters() -> None:
    m = time_model(fit_shifted_exponential([0.001, 0.0012, 0.0015]), "exp:0.02")
    adv = rank_variants(m, 4, iterations=2000)
    times = [r.time_per_update_s for r in adv.rows]
    assert times == sorted(times) and len(adv.rows) == 16
    assert (adv.best.algo, adv.best.k) in {("k-async", 1), ("k-batch-async", 1)}
    assert adv.best.staleness == 3.0 and adv.rows[-1].speedup_vs_sync == pytest.approx(1.0)
    assert "staleness-free" in adv.reason
    strict = rank_variants(m, 4, max_staleness=0, iterations=2000)
    assert strict.best.staleness == 0 and strict.best.algo in ("k-sync", "k-batch-sync")
    assert "excluded" in strict.reason


# ------------------------------------------------------------------------------------- the table

def test_advise_table_names_the_recommendation(capsys) -> None:
    code, out, err = run_main(["advise", "quadratic", "-w", "2", "--calibration-batches", "20",
                               "--iterations", "1000", "-o", "batch_size=16"], capsys)
    assert code == 0, err
    assert "calibration: quadratic, 20 mini-batches of 16" in out
    assert "recommended: " in out and "reason: " in out and out.count(" *\n") == 1


# ------------------------------------------------------------------------------------- bad input
BAD = [
    (["advise", "logreg", "-w", "0"], "invalid workers=0"),
    (["advise", "logreg", "-w", "300"], "invalid workers=300"),
    (["advise", "logreg", "-w", "two"], "'two' is not a valid integer"),
    (["advise", "logreg"], "Missing option '--workers'"),
    (["advise", "logreg", "-w", "2", "--delay", "exp:-1"], "invalid delay 'exp:-1'"),
    (["advise", "logreg", "-w", "2", "--delay", "gamma:1"], "invalid delay 'gamma:1'"),
    (["advise", "nosuchproblem", "-w", "2"], "unknown problem 'nosuchproblem'"),
    (["advise", "logreg", "-w", "2", "--max-staleness", "-1"], "invalid max_staleness=-1.0"),
    (["advise", "logreg", "-w", "2", "--calibration-batches", "1"], "invalid calibration_batches=1"),
    (["advise", "logreg", "-w", "2", "--calibration-s", "0"], "invalid calibration_s=0.0"),
    (["advise", "logreg", "-w", "2", "-o", "nokey"], "malformed problem option 'nokey'"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys) -> None:
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shmopt: error: ") and message in lines[0], err
