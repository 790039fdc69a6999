"""E[T] per update of the K-variants (Dutta et al., AISTATS 2018): closed forms vs simulation.

The simulation is the oracle the engine's measured timings are compared against, so it is checked
three ways: against every closed form, against a slow reference simulation driven by the engine's
own K-of-P aggregator (strategies/server.py), and on deterministic (constant) delays.
"""
from __future__ import annotations

import heapq
import itertools
import math

import numpy as np
import pytest

from shmopt.errors import ConfigError
from shmopt.strategies.delays import Delay, parse_delay
from shmopt.strategies.server import Arrival, KAggregator, WorkerMode
from shmopt.strategies.theory import (
    VARIANTS,
    WARMUP_UPDATES,
    TheoryResult,
    closed_form,
    expected_iteration_time,
    harmonic,
    simulate,
)

ITERS = 50_000
EXP = "exp:0.02"
SHIFTED = "shifted-exp:0.01:0.02"


def test_harmonic() -> None:
    assert harmonic(0) == 0.0
    assert harmonic(1) == 1.0
    assert harmonic(4) == pytest.approx(25 / 12, rel=1e-15)
    assert harmonic(100) == pytest.approx(math.log(100) + 0.5772156649015329 + 1 / 200 - 1 / 120_000,
                                          rel=1e-9)
    with pytest.raises(ValueError):
        harmonic(-1)


# ------------------------------------------------------------------------------------- closed forms
def test_closed_form_values_exponential() -> None:
    mu, p = 50.0, 4
    h = harmonic
    want = {("sync", 4): h(4) / mu, ("async", 4): 1 / (p * mu),
            ("k-sync", 2): (h(4) - h(2)) / mu, ("k-batch-sync", 2): 2 / (p * mu),
            ("k-async", 2): (h(4) - h(2)) / mu, ("k-batch-async", 2): 2 / (p * mu)}
    for (variant, k), value in want.items():
        r = expected_iteration_time(variant, p, k, EXP)
        assert r.method == "closed-form" and r.stderr is None
        assert r.expected_iteration_time_s == pytest.approx(value, rel=1e-12), variant
    assert expected_iteration_time("k-sync", 4, 2, EXP).formula == "(H_P - H_{P-K})/mu"
    assert expected_iteration_time("sync", 4, None, EXP).formula == "H_P/mu"
    assert expected_iteration_time("async", 4, None, EXP).formula == "1/(P*mu)"


def test_closed_form_values_shifted() -> None:
    mu, delta, p = 50.0, 0.01 + 0.005, 4
    h = harmonic
    want = {("sync", 4): delta + h(4) / mu, ("async", 4): (delta + 1 / mu) / p,
            ("k-sync", 3): delta + (h(4) - h(1)) / mu, ("k-batch-async", 3): 3 * (delta + 1 / mu) / p}
    for (variant, k), value in want.items():
        r = expected_iteration_time(variant, p, k, SHIFTED, compute=0.005)
        assert r.method == "closed-form"
        assert r.expected_iteration_time_s == pytest.approx(value, rel=1e-12), variant
        assert r.formula.startswith("Delta + ") or "Delta" in r.formula
    # an exponential delay plus constant compute is a shifted exponential with Delta = compute
    a = expected_iteration_time("k-sync", 4, 2, "exp:0.02", compute=0.01)
    b = expected_iteration_time("k-sync", 4, 2, "shifted-exp:0.01:0.02")
    assert a.expected_iteration_time_s == pytest.approx(b.expected_iteration_time_s, rel=1e-12)
    # shifted-exp with SHIFT 0 and no compute is the pure exponential
    assert closed_form("k-batch-sync", 4, 2, "shifted-exp:0:0.02") == closed_form("k-batch-sync", 4, 2, EXP)


def test_where_no_closed_form_exists_we_simulate() -> None:
    for variant, k in [("k-batch-sync", 2), ("k-async", 2), ("k-async", 3)]:
        assert closed_form(variant, 4, k, SHIFTED) is None
        assert closed_form(variant, 4, k, "pareto:0.01:3") is None
        r = expected_iteration_time(variant, 4, k, SHIFTED, iterations=2000)
        assert r.method == "simulation" and r.stderr is not None and r.stderr > 0
        assert r.iterations == 2000 and "no closed form" in r.formula
    # the degenerate K that are other variants in disguise do have one
    assert closed_form("k-batch-sync", 4, 1, SHIFTED) == closed_form("k-sync", 4, 1, SHIFTED)
    assert closed_form("k-async", 4, 4, SHIFTED)[0] == closed_form("sync", 4, None, SHIFTED)[0]
    assert closed_form("k-async", 4, 1, SHIFTED)[0] == closed_form("async", 4, None, SHIFTED)[0]


def test_ratio_theorem() -> None:
    """E[T_sync]/E[T_async] = P * H_P for exponential times."""
    for p in range(1, 17):
        s = expected_iteration_time("sync", p, None, EXP).expected_iteration_time_s
        a = expected_iteration_time("async", p, None, EXP).expected_iteration_time_s
        assert s / a == pytest.approx(p * harmonic(p), rel=1e-12)
    for p in (4, 8):
        s, _ = simulate("sync", p, None, EXP, iterations=ITERS, seed=1)
        a, _ = simulate("async", p, None, EXP, iterations=ITERS, seed=2)
        assert s / a == pytest.approx(p * harmonic(p), rel=0.03)


# ------------------------------------------------------------------------- simulation vs closed forms
CASES = [(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 3), (4, 4), (8, 1), (8, 4), (8, 7), (8, 8)]


@pytest.mark.parametrize("delay, compute", [(EXP, 0.0), (SHIFTED, 0.0), (EXP, 0.004)])
@pytest.mark.parametrize("p, k", CASES)
def test_simulation_matches_every_closed_form(p: int, k: int, delay: str, compute: float) -> None:
    checked = 0
    for variant in VARIANTS:
        cf = closed_form(variant, p, k, delay, compute)
        if cf is None:
            continue
        mean, se = simulate(variant, p, k, delay, compute, iterations=ITERS, seed=p * 100 + k)
        assert se < 0.0065 * mean, (variant, se, mean)       # the 2 % check is meaningful
        assert mean == pytest.approx(cf[0], rel=0.02), (variant, p, k, delay, cf[1])
        checked += 1
    pure = delay == EXP and compute == 0.0
    assert checked == (6 if pure or k == 1 else 5 if k == p else 4)


@pytest.mark.parametrize("p, k", [(1, 1), (4, 2), (4, 4), (8, 3), (8, 8)])
def test_simulation_matches_pareto_closed_forms(p: int, k: int) -> None:
    d = "pareto:0.01:3"
    for variant in ("k-sync", "sync", "async", "k-batch-async"):
        cf = closed_form(variant, p, k, d, 0.002)
        assert cf is not None
        mean, _ = simulate(variant, p, k, d, 0.002, iterations=ITERS, seed=7)
        assert mean == pytest.approx(cf[0], rel=0.02), variant
    # infinite means are reported as such
    assert closed_form("async", p, k, "pareto:0.01:1")[0] == math.inf
    assert closed_form("sync", p, k, "pareto:0.01:0.5")[0] == math.inf
    assert math.isfinite(closed_form("k-sync", 4, 2, "pareto:0.01:0.5")[0])   # (P-K+1)*alpha > 1


def test_special_k_equal_the_named_variants() -> None:
    for p in (2, 4, 8):
        for delay in (EXP, SHIFTED):
            assert closed_form("k-sync", p, p, delay) == closed_form("sync", p, None, delay)
            assert closed_form("k-async", p, 1, delay) == closed_form("async", p, None, delay)
            assert (simulate("k-sync", p, p, delay, iterations=5000, seed=3)
                    == simulate("sync", p, 7, delay, iterations=5000, seed=3))
            # different code paths for the same protocol: K = P k-async is fully sync,
            # K = 1 k-async is async = K = 1 k-batch-async
            sync = closed_form("sync", p, None, delay)[0]
            assert simulate("k-async", p, p, delay, iterations=ITERS)[0] == pytest.approx(sync, rel=0.02)
            ka, _ = simulate("k-async", p, 1, delay, iterations=ITERS, seed=4)
            kba, _ = simulate("k-batch-async", p, 1, delay, iterations=ITERS, seed=5)
            assert ka == pytest.approx(kba, rel=0.02)


@pytest.mark.parametrize("p", [4, 8])
def test_batch_sync_and_async_are_never_slower_than_k_sync(p: int) -> None:
    for k in range(2, p + 1):
        ksync = closed_form("k-sync", p, k, SHIFTED)[0]
        bs, bs_se = simulate("k-batch-sync", p, k, SHIFTED, iterations=20_000, seed=k)
        assert bs <= ksync + 3 * bs_se, k
        if k < p:
            ka, ka_se = simulate("k-async", p, k, SHIFTED, iterations=20_000, seed=k)
            assert ka < ksync - 3 * ka_se, k                   # "below K-sync"
    bs_full, _ = simulate("k-batch-sync", p, p, SHIFTED, iterations=20_000)
    assert bs_full < 0.9 * closed_form("k-sync", p, p, SHIFTED)[0]   # fast learners help at K = P


# ------------------------------------------------------------------------------------- constant delays
X = 0.02


@pytest.mark.parametrize("p, k, want", [
    (1, 1, {"k-sync": X, "k-batch-sync": X, "k-async": X, "k-batch-async": X}),
    (4, 2, {"k-sync": X, "k-batch-sync": X, "k-async": X / 2, "k-batch-async": X / 2}),
    (3, 2, {"k-sync": X, "k-batch-sync": X, "k-async": X, "k-batch-async": 2 * X / 3}),
    (5, 2, {"k-sync": X, "k-batch-sync": X, "k-async": X / 2, "k-batch-async": 2 * X / 5}),
    (7, 3, {"k-sync": X, "k-batch-sync": X, "k-async": X / 2, "k-batch-async": 3 * X / 7}),
    (8, 1, {"k-sync": X, "k-batch-sync": X, "k-async": X / 8, "k-batch-async": X / 8}),
    (8, 8, {"k-sync": X, "k-batch-sync": X, "k-async": X, "k-batch-async": X}),
])
def test_constant_delays_are_deterministic(p: int, k: int, want: dict[str, float]) -> None:
    for variant, value in want.items():
        cf = expected_iteration_time(variant, p, k, "none", compute=X)
        assert cf.method == "closed-form"
        assert cf.expected_iteration_time_s == pytest.approx(value, rel=1e-12), variant
        sim = expected_iteration_time(variant, p, k, "none", compute=X, simulate=True,
                                      iterations=20_000)
        assert sim.method == "simulation"
        assert sim.expected_iteration_time_s == pytest.approx(value, rel=1e-3), variant
    assert expected_iteration_time("sync", p, None, "none", compute=X).expected_iteration_time_s == X
    assert expected_iteration_time("async", p, None, "none", compute=X).expected_iteration_time_s \
        == pytest.approx(X / p, rel=1e-12)
    assert expected_iteration_time("k-sync", p, k, "none").expected_iteration_time_s == 0.0


# ------------------------------------------------------------------------------------- reference simulation
def reference_update_times(variant: str, p: int, k: int, delay: Delay, updates: int,
                           seed: int) -> list[float]:
    """Slow event-by-event simulation driven by the engine's own K-of-P aggregator: learners with
    identities, cancellation by token, versions; the aggregator decides what forms an update."""
    agg = KAggregator(variant, p, k)
    rng = np.random.default_rng(seed)
    draws = iter(delay.sample(updates * (k + 2 * p) + 10 * p, rng).tolist())
    seq = itertools.count()
    events: list[tuple[float, int, int, int]] = []
    token = [0] * p
    on_version = [0] * p
    version = 0

    def start(r: int, t: float) -> None:
        token[r] += 1                         # cancels the learner's pending mini-batch, if any
        on_version[r] = version
        heapq.heappush(events, (t + next(draws), next(seq), r, token[r]))

    for r in range(p):
        start(r, 0.0)
    times: list[float] = []
    while len(times) < updates:
        t, _, r, tok = heapq.heappop(events)
        if tok != token[r]:
            continue                          # cancelled
        assert agg.offer(Arrival(r, on_version[r]), version) == "accepted"
        if agg.mode is WorkerMode.SAME:
            start(r, t)                       # another batch on the same parameters
        if agg.ready():
            decision = agg.take(version)
            version += 1
            times.append(t)
            for q in decision.release:
                start(q, t)
        if agg.mode is WorkerMode.PULL:
            start(r, t)                       # pulls the current (maybe new) parameters
    return times


@pytest.mark.parametrize("delay", [SHIFTED, "pareto:0.01:3"])
@pytest.mark.parametrize("p, k", [(4, 2), (4, 3), (3, 3)])
def test_simulation_agrees_with_the_aggregator_driven_reference(p: int, k: int, delay: str) -> None:
    d = parse_delay(delay)
    w, n = WARMUP_UPDATES, 10_000
    for variant in ("k-sync", "k-batch-sync", "k-async", "k-batch-async"):
        times = reference_update_times(variant, p, k, d, w + n, seed=11)
        ref = (times[-1] - times[w - 1]) / n
        mean, se = simulate(variant, p, k, d, iterations=n * 4, seed=12)
        assert mean == pytest.approx(ref, rel=0.03), (variant, mean, ref)


# ------------------------------------------------------------------------------------- results and validation
def test_result_object() -> None:
    r = expected_iteration_time("sync", 4, 99, EXP)       # k is ignored for sync and async
    assert (r.variant, r.workers, r.k, r.delay) == ("sync", 4, 4, "exp:0.02")
    assert expected_iteration_time("async", 4, None, EXP).k == 1
    d = r.to_dict()
    assert set(d) >= {"variant", "workers", "k", "delay", "expected_iteration_time_s", "method",
                      "formula", "stderr"}
    assert d["expected_iteration_time_s"] == r.expected_iteration_time_s
    with pytest.raises(AttributeError):
        r.k = 3  # type: ignore[misc]
    assert isinstance(r, TheoryResult)
    s = expected_iteration_time("k-sync", 4, 2, Delay("exp", (0.02,)), simulate=True,
                                iterations=3000, seed=9)
    assert s.method == "simulation" and s.stderr is not None and s.formula.endswith("(requested)")
    assert s == expected_iteration_time("k-sync", 4, 2, EXP, simulate=True, iterations=3000, seed=9)
    assert s != expected_iteration_time("k-sync", 4, 2, EXP, simulate=True, iterations=3000, seed=10)
    assert expected_iteration_time("k-sync", 4, 2, EXP, simulate=False).method == "closed-form"


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="k-sync", workers=4, k=5), "invalid k=5: must be an integer in [1, 4]"),
    (dict(variant="k-async", workers=4, k=0), "invalid k=0: must be an integer in [1, 4]"),
    (dict(variant="k-batch-async", workers=4, k=None), "invalid k=None: must be an integer in [1, 4]"),
    (dict(variant="hogwild", workers=4, k=1),
     "unknown variant 'hogwild': choose one of sync, async, k-sync, k-batch-sync, k-async, k-batch-async"),
    (dict(variant="sync", workers=0, k=1), "invalid workers=0: must be an integer >= 1"),
    (dict(variant="sync", workers=2, k=1, compute=-1.0), "invalid compute=-1.0"),
    (dict(variant="sync", workers=2, k=1, compute=math.nan), "invalid compute=nan"),
    (dict(variant="sync", workers=2, k=1, iterations=0), "invalid iterations=0"),
    (dict(variant="sync", workers=2, k=1, seed=-1), "invalid seed=-1"),
    (dict(variant="sync", workers=2, k=1, delay="exp:0"), "invalid delay 'exp:0'"),
])
def test_validation_errors(kwargs: dict, message: str) -> None:
    kw = {"delay": EXP, **kwargs}
    variant, workers, k, delay = kw.pop("variant"), kw.pop("workers"), kw.pop("k"), kw.pop("delay")
    with pytest.raises(ConfigError) as e:
        expected_iteration_time(variant, workers, k, delay, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_simulate_validates_too() -> None:
    with pytest.raises(ConfigError, match=r"invalid k=5: must be an integer in \[1, 4\]"):
        simulate("k-batch-sync", 4, 5, EXP)
    with pytest.raises(ConfigError, match="unknown variant"):
        closed_form("fully-sync", 4, 4, EXP)
