"""Straggler injection: delay specs, --slow specs, seeded streams and the sampled distributions."""
from __future__ import annotations

import ast
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from shmopt.errors import ConfigError
from shmopt.strategies.delays import DELAY_FORMS, Delay, DelaySampler, parse_delay, parse_slow

ACCEPTED = "accepted: none, exp:MEAN, shifted-exp:SHIFT:MEAN, pareto:SCALE:ALPHA"


# ------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("spec, kind, params, mean", [
    ("none", "none", (), 0.0),
    ("exp:0.02", "exp", (0.02,), 0.02),
    ("shifted-exp:0.01:0.02", "shifted-exp", (0.01, 0.02), 0.03),
    ("shifted-exp:0:1", "shifted-exp", (0.0, 1.0), 1.0),
    ("pareto:0.01:3", "pareto", (0.01, 3.0), 0.015),
    ("pareto:2:1", "pareto", (2.0, 1.0), math.inf),
    ("pareto:2:0.5", "pareto", (2.0, 0.5), math.inf),
    ("exp:1e-3", "exp", (0.001,), 0.001),
])
def test_parse_fields_mean_and_round_trip(spec: str, kind: str, params: tuple[float, ...],
                                          mean: float) -> None:
    d = parse_delay(spec)
    assert d.kind == kind
    assert d.params == params
    assert d.mean == pytest.approx(mean)
    assert parse_delay(d.spec) == d
    assert parse_delay(str(d)) == d
    assert pickle.loads(pickle.dumps(d)) == d
    assert parse_delay(d) is d


def test_spec_is_normalised() -> None:
    assert parse_delay("  EXP : 0.020 ").spec == "exp:0.02"
    assert parse_delay("shifted-exp:1.0:2").spec == "shifted-exp:1:2"
    assert parse_delay("pareto:0.1:2.5").spec == "pareto:0.1:2.5"
    x = 0.1 + 0.2                               # not representable in few digits: still exact
    assert parse_delay(f"exp:{x!r}").params == (x,)
    assert parse_delay(Delay("exp", (x,)).spec).params == (x,)


def test_named_parameters() -> None:
    d = parse_delay("shifted-exp:0.01:0.02")
    assert (d.shift, d.exp_mean, d.rate, d.scale, d.alpha) == (0.01, 0.02, 50.0, None, None)
    p = parse_delay("pareto:0.5:3")
    assert (p.shift, p.exp_mean, p.rate, p.scale, p.alpha) == (0.0, None, None, 0.5, 3.0)
    assert parse_delay("none").is_constant and not parse_delay("exp:1").is_constant
    assert DELAY_FORMS == ("none", "exp:MEAN", "shifted-exp:SHIFT:MEAN", "pareto:SCALE:ALPHA")


def test_documented_error_message() -> None:
    with pytest.raises(ConfigError) as e:
        parse_delay("exp:-1")
    assert str(e.value) == f"invalid delay 'exp:-1': MEAN must be a number > 0; {ACCEPTED}"


@pytest.mark.parametrize("spec, fragment", [
    ("", "empty spec"),
    ("   ", "empty spec"),
    ("gauss:1", "unknown kind 'gauss'"),
    ("exponential:1", "unknown kind 'exponential'"),
    ("exp", "exp takes 1 parameter (MEAN), got 0"),
    ("exp:", "MEAN must be a number > 0, got ''"),
    ("exp:1:2", "exp takes 1 parameter (MEAN), got 2"),
    ("none:0", "none takes no parameters, got 1"),
    ("shifted-exp:1", "shifted-exp takes 2 parameters (SHIFT:MEAN), got 1"),
    ("pareto:1:2:3", "pareto takes 2 parameters (SCALE:ALPHA), got 3"),
    ("exp:abc", "MEAN must be a number > 0, got 'abc'"),
    ("pareto:x:2", "SCALE must be a number > 0, got 'x'"),
    ("exp:0", "MEAN must be a number > 0"),
    ("exp:-0.5", "MEAN must be a number > 0"),
    ("shifted-exp:-1:1", "SHIFT must be a number >= 0"),
    ("shifted-exp:0:0", "MEAN must be a number > 0"),
    ("pareto:0:2", "SCALE must be a number > 0"),
    ("pareto:1:0", "ALPHA must be a number > 0"),
    ("pareto:1:-3", "ALPHA must be a number > 0"),
    ("exp:nan", "MEAN must be a number > 0"),
    ("exp:inf", "MEAN must be finite"),
    ("shifted-exp:inf:1", "SHIFT must be finite"),
    ("pareto:1:inf", "ALPHA must be finite"),
])
def test_malformed_delay_specs(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_delay(spec)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"invalid delay {spec!r}: ")
    assert fragment in msg
    assert msg.endswith(ACCEPTED)


def test_non_string_and_direct_construction_are_validated() -> None:
    with pytest.raises(ConfigError, match="expected a string"):
        parse_delay(0.02)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="MEAN must be a number > 0"):
        Delay("exp", (-1.0,))
    with pytest.raises(ConfigError, match="unknown kind"):
        Delay("uniform", (1.0,))
    with pytest.raises(ConfigError, match="takes 2 parameters"):
        Delay("pareto", (1.0,))
    assert Delay("exp", (1,)).params == (1.0,)          # ints are stored as floats


# ------------------------------------------------------------------------------------- --slow
def test_parse_slow() -> None:
    assert parse_slow([], 4) == {}
    assert parse_slow(["0:2", " 3 : 0.5 "], 4) == {0: 2.0, 3: 0.5}
    assert parse_slow("1:10", 2) == {1: 10.0}            # a single string is one spec


@pytest.mark.parametrize("specs, workers, fragment", [
    (["4:2"], 4, "rank 4 out of range [0, 4)"),
    (["-1:2"], 4, "rank -1 out of range [0, 4)"),
    (["a:2"], 4, "RANK must be an integer, got 'a'"),
    (["1.5:2"], 4, "RANK must be an integer, got '1.5'"),
    (["1"], 4, "needs exactly one ':', got 0"),
    (["1:2:3"], 4, "needs exactly one ':', got 2"),
    (["1:0"], 4, "FACTOR must be a number > 0, got '0'"),
    (["1:-2"], 4, "FACTOR must be a number > 0, got '-2'"),
    (["1:nan"], 4, "FACTOR must be a number > 0, got 'nan'"),
    (["1:x"], 4, "FACTOR must be a number > 0, got 'x'"),
    (["1:inf"], 4, "FACTOR must be finite"),
    (["1:2", "1:3"], 4, "rank 1 given twice"),
    ([""], 4, "needs exactly one ':'"),
])
def test_malformed_slow_specs(specs: list[str], workers: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_slow(specs, workers)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("invalid --slow ")
    assert fragment in msg
    assert msg.endswith(f"expected RANK:FACTOR with 0 <= RANK < {workers} and FACTOR > 0")


def test_parse_slow_rejects_bad_workers() -> None:
    with pytest.raises(ConfigError, match="invalid workers=0"):
        parse_slow(["0:2"], 0)


# ------------------------------------------------------------------------------------- streams
@pytest.mark.parametrize("spec", ["exp:0.02", "shifted-exp:0.01:0.02", "pareto:0.01:2.5"])
def test_seeded_streams(spec: str) -> None:
    d = parse_delay(spec)
    s1, s2 = d.sampler(11), d.sampler(11)
    first = [s1.next() for _ in range(100)]
    assert first == [s2.next() for _ in range(100)]                 # same seed, same stream
    assert len(set(first)) == 100                                    # a stream, not a constant
    other = [d.sampler(12).next() for _ in range(100)]
    assert first != other                                            # seed + rank differ
    slow = d.sampler(11, factor=3.0)
    assert [slow.next() for _ in range(100)] == pytest.approx([3.0 * x for x in first], rel=1e-15)
    # the worker stream and the vectorised sampler draw the same numbers from the same state
    ref = d.sample(100, np.random.Generator(np.random.PCG64(11)))
    assert np.array_equal(np.asarray(first), ref)
    assert all(isinstance(x, float) and x > 0 for x in first)


def test_sampler_pickles_mid_stream() -> None:
    s = parse_delay("exp:1").sampler(5, 2.0)
    for _ in range(7):
        s.next()
    t = pickle.loads(pickle.dumps(s))
    assert (t.seed, t.factor, t.delay) == (5, 2.0, s.delay)
    assert [t.next() for _ in range(20)] == [s.next() for _ in range(20)]
    assert "exp:1" in repr(t)


def test_none_is_zero() -> None:
    s = parse_delay("none").sampler(0, 5.0)
    assert [s.next() for _ in range(10)] == [0.0] * 10
    z = parse_delay("none").sample((3, 4), np.random.default_rng(0))
    assert z.shape == (3, 4) and not z.any()


@pytest.mark.parametrize("seed, factor, fragment", [
    (-1, 1.0, "invalid delay-seed=-1"),
    (1.5, 1.0, "invalid delay-seed=1.5"),
    (0, 0.0, "invalid slow-factor=0.0"),
    (0, -2.0, "invalid slow-factor=-2.0"),
    (0, math.nan, "invalid slow-factor=nan"),
    (0, math.inf, "invalid slow-factor=inf"),
])
def test_sampler_validation(seed: int, factor: float, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        DelaySampler(parse_delay("exp:1"), seed, factor)   # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- distributions
N = 400_000


@pytest.mark.parametrize("spec, mean, var, minimum", [
    ("exp:0.02", 0.02, 0.02 ** 2, 0.0),
    ("shifted-exp:0.01:0.02", 0.03, 0.02 ** 2, 0.01),
    ("pareto:0.01:3", 0.015, 0.01 ** 2 * 3 / ((3 - 1) ** 2 * (3 - 2)), 0.01),
    ("pareto:2:5", 2.5, 4.0 * 5 / ((5 - 1) ** 2 * (5 - 2)), 2.0),
])
def test_sample_moments(spec: str, mean: float, var: float, minimum: float) -> None:
    d = parse_delay(spec)
    x = d.sample(N, np.random.default_rng(1234))
    assert x.shape == (N,) and x.dtype == np.float64
    assert d.mean == pytest.approx(mean, rel=1e-12)
    se = math.sqrt(var / N)
    assert abs(x.mean() - mean) < 5 * se
    assert x.min() >= minimum
    assert x.min() < minimum + 1e-3 * mean          # the support really starts at the minimum


def test_sample_shapes_of_the_tails() -> None:
    rng = np.random.default_rng(99)
    e = parse_delay("exp:2").sample(N, rng)
    p_over_mean = float((e > 2.0).mean())           # P(X > 1/mu) = e^-1 for an exponential
    assert abs(p_over_mean - math.exp(-1)) < 5 * math.sqrt(math.exp(-1) * (1 - math.exp(-1)) / N)
    p = parse_delay("pareto:1:1.5").sample(N, rng)
    tail = float((p > 4.0).mean())                  # P(X > x) = (scale/x)^alpha
    q = 4.0 ** -1.5
    assert abs(tail - q) < 5 * math.sqrt(q * (1 - q) / N)


# ------------------------------------------------------------------------------------- layering
@pytest.mark.parametrize("module", ["delays.py", "theory.py"])
def test_pure_imports(module: str) -> None:
    """Strategy modules are pure: no torch, no shmopt.engine."""
    import shmopt.strategies as pkg
    src = (Path(pkg.__file__).parent / module).read_text()
    allowed = {"__future__", "math", "heapq", "dataclasses", "numpy", "collections.abc"}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= allowed, ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module in allowed, node.module
            else:
                assert node.module in ("errors", "checks", "delays"), node.module
