"""Straggler injection: the random delay a learner adds to each mini-batch's compute time.

Dutta, Joshi, Ghosh, Dube, Nagpurkar, "Slow and Stale Gradients Can Win the Race: Error-Runtime
Trade-offs in Distributed SGD", AISTATS 2018 (arXiv 1803.01113), model a learner's time per
mini-batch as an i.i.d. random variable X. shmopt reproduces that runtime model by adding an injected
delay D to the real compute time of every mini-batch: X = compute + D. The delay distributions
(all times in seconds):

=============================  =====================================  =============================
spec                           distribution of D                      E[D]
=============================  =====================================  =============================
``none``                       D = 0                                  0
``exp:MEAN``                   Exp(μ), μ = 1/MEAN                     MEAN
``shifted-exp:SHIFT:MEAN``     SHIFT + Exp(μ), μ = 1/MEAN             SHIFT + MEAN
``pareto:SCALE:ALPHA``         Pareto type I, x_min = SCALE, index α  SCALE·α/(α−1) if α > 1, else ∞
=============================  =====================================  =============================

MEAN is the mean of the exponential part (so ``shifted-exp:0:M`` is ``exp:M``); the Pareto density
is α·SCALE^α / x^(α+1) for x ≥ SCALE (sampled as SCALE·(1 + Lomax(α))). Pareto with α ≤ 1 has an
infinite mean: it is accepted (a very heavy straggler tail) and :attr:`Delay.mean` returns ``inf``.

``--slow RANK:FACTOR`` (repeatable) multiplies one worker's delays by FACTOR (:func:`parse_slow`).

Each worker draws its own seeded stream: :meth:`Delay.sampler` with ``seed + rank`` gives a
:class:`DelaySampler` over ``numpy.random.Generator(PCG64(seed + rank))``; the same seed always
gives the same stream. :meth:`Delay.sample` is the vectorised form the runtime theory
(:mod:`shmopt.strategies.theory`) simulates with: same distribution, and for the same generator
state the same numbers as successive :meth:`DelaySampler.next` calls with factor 1.

Pure module: imports only ``math``, ``dataclasses`` and ``numpy``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..checks import integer, number
from ..errors import ConfigError

#: Accepted delay spec forms, as shown in error messages and ``--help``.
DELAY_FORMS: tuple[str, ...] = ("none", "exp:MEAN", "shifted-exp:SHIFT:MEAN", "pareto:SCALE:ALPHA")
_ACCEPTED = "accepted: " + ", ".join(DELAY_FORMS)

#: kind -> (parameter names, whether each must be > 0 (True) or >= 0 (False))
_KINDS: dict[str, tuple[tuple[str, bool], ...]] = {
    "none": (),
    "exp": (("MEAN", True),),
    "shifted-exp": (("SHIFT", False), ("MEAN", True)),
    "pareto": (("SCALE", True), ("ALPHA", True)),
}


def _fmt(x: float) -> str:
    """Shortest text that parses back to exactly ``x`` (``1.0`` is written ``1``)."""
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s


def _check_params(kind: str, params: tuple[float, ...]) -> str | None:
    """Return what is wrong with ``params`` for ``kind``, or None when they are valid."""
    if kind not in _KINDS:
        return f"unknown kind {kind!r}"
    names = _KINDS[kind]
    if len(params) != len(names):
        if not names:
            return f"{kind} takes no parameters, got {len(params)}"
        wanted = ":".join(n for n, _ in names)
        plural = "s" if len(names) > 1 else ""
        return f"{kind} takes {len(names)} parameter{plural} ({wanted}), got {len(params)}"
    for (name, strict), value in zip(names, params):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            return f"{name} must be a number {'>' if strict else '>='} 0"
        if math.isinf(value):
            return f"{name} must be finite"
        if (strict and not value > 0) or (not strict and not value >= 0):
            return f"{name} must be a number {'>' if strict else '>='} 0"
    return None


@dataclass(frozen=True)
class Delay:
    """An injected per-mini-batch delay distribution (frozen, picklable).

    ``kind`` is one of ``none``, ``exp``, ``shifted-exp``, ``pareto``; ``params`` are its numbers in
    the order of the spec (``exp``: (MEAN,); ``shifted-exp``: (SHIFT, MEAN); ``pareto``:
    (SCALE, ALPHA)). Build one with :func:`parse_delay`; ``Delay(kind, params)`` validates too.
    """

    kind: str = "none"
    params: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        params = tuple(float(p) if isinstance(p, (int, float)) and not isinstance(p, bool) else p
                       for p in self.params)
        object.__setattr__(self, "params", params)
        problem = _check_params(self.kind, params)
        if problem is not None:
            shown = ":".join([str(self.kind), *(str(p) for p in params)])
            raise ConfigError(f"invalid delay {shown!r}: {problem}; {_ACCEPTED}")

    # ----------------------------------------------------------------- named parameters
    @property
    def shift(self) -> float:
        """Constant part Δ of the delay (SHIFT of ``shifted-exp``; 0 for the other kinds)."""
        return self.params[0] if self.kind == "shifted-exp" else 0.0

    @property
    def exp_mean(self) -> float | None:
        """Mean 1/μ of the exponential part (``exp``, ``shifted-exp``), else None."""
        if self.kind == "exp":
            return self.params[0]
        if self.kind == "shifted-exp":
            return self.params[1]
        return None

    @property
    def rate(self) -> float | None:
        """μ of the exponential part (``exp``, ``shifted-exp``), else None."""
        m = self.exp_mean
        return None if m is None else 1.0 / m

    @property
    def scale(self) -> float | None:
        """Pareto x_min (SCALE), else None."""
        return self.params[0] if self.kind == "pareto" else None

    @property
    def alpha(self) -> float | None:
        """Pareto tail index α (ALPHA), else None."""
        return self.params[1] if self.kind == "pareto" else None

    @property
    def is_constant(self) -> bool:
        return self.kind == "none"

    # ----------------------------------------------------------------- moments and text
    @property
    def mean(self) -> float:
        """E[D] in seconds (``inf`` for Pareto with α ≤ 1)."""
        if self.kind == "none":
            return 0.0
        if self.kind == "exp":
            return self.params[0]
        if self.kind == "shifted-exp":
            return self.params[0] + self.params[1]
        scale, alpha = self.params
        return math.inf if alpha <= 1.0 else scale * alpha / (alpha - 1.0)

    @property
    def spec(self) -> str:
        """The spec string; ``parse_delay(d.spec) == d``."""
        return ":".join([self.kind, *(_fmt(p) for p in self.params)])

    def __str__(self) -> str:
        return self.spec

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """``n`` i.i.d. delays (an int or a shape) as a float64 array, drawn from ``rng``."""
        if self.kind == "none":
            return np.zeros(n, dtype=np.float64)
        if self.kind == "exp":
            return rng.exponential(self.params[0], n)
        if self.kind == "shifted-exp":
            return self.params[0] + rng.exponential(self.params[1], n)
        scale, alpha = self.params
        return scale * (1.0 + rng.pareto(alpha, n))

    def sampler(self, seed: int, factor: float = 1.0) -> "DelaySampler":
        """A seeded stream of this delay times ``factor`` (the engine passes ``seed + rank``)."""
        return DelaySampler(self, seed, factor)


class DelaySampler:
    """One worker's delay stream: ``next()`` returns the next delay in seconds (× ``factor``).

    The generator is ``numpy.random.Generator(PCG64(seed))``; same seed, same stream. ``none``
    returns 0.0 and consumes no randomness. Picklable (the generator state travels with it).
    """

    __slots__ = ("delay", "seed", "factor", "_rng")

    def __init__(self, delay: Delay, seed: int, factor: float = 1.0) -> None:
        self.delay = delay
        self.seed = integer("delay-seed", seed, 0)
        self.factor = number("slow-factor", factor, gt=0)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))

    def next(self) -> float:
        """The next delay in seconds."""
        d = self.delay
        if d.kind == "none":
            return 0.0
        if d.kind == "exp":
            x = self._rng.exponential(d.params[0])
        elif d.kind == "shifted-exp":
            x = d.params[0] + self._rng.exponential(d.params[1])
        else:
            x = d.params[0] * (1.0 + self._rng.pareto(d.params[1]))
        return float(x) * self.factor

    def __getstate__(self) -> tuple[Delay, int, float, dict]:
        return (self.delay, self.seed, self.factor, self._rng.bit_generator.state)

    def __setstate__(self, state: tuple[Delay, int, float, dict]) -> None:
        self.delay, self.seed, self.factor, rng_state = state
        self._rng = np.random.Generator(np.random.PCG64())
        self._rng.bit_generator.state = rng_state

    def __repr__(self) -> str:
        return f"DelaySampler({self.delay.spec!r}, seed={self.seed}, factor={self.factor})"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_delay(spec: str | Delay) -> Delay:
    """Parse ``none``, ``exp:MEAN``, ``shifted-exp:SHIFT:MEAN`` or ``pareto:SCALE:ALPHA``.

    Malformed specs raise :class:`~shmopt.errors.ConfigError` with one line naming the problem and
    the accepted forms. A :class:`Delay` is returned unchanged.
    """
    if isinstance(spec, Delay):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"invalid delay {spec!r}: expected a string; {_ACCEPTED}")
    text = spec.strip()
    shown = spec.replace("\n", " ")

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"invalid delay {shown!r}: {problem}; {_ACCEPTED}")

    if not text:
        raise fail("empty spec")
    kind, *fields = [f.strip() for f in text.split(":")]
    kind = kind.lower()
    if kind not in _KINDS:
        raise fail(f"unknown kind {kind!r}")
    names = _KINDS[kind]
    if len(fields) != len(names):
        raise fail(_check_params(kind, tuple(0.0 for _ in fields)) or "wrong number of parameters")
    values: list[float] = []
    for (name, strict), raw in zip(names, fields):
        v = _number(raw)
        if v is None:
            raise fail(f"{name} must be a number {'>' if strict else '>='} 0, got {raw!r}")
        values.append(v)
    problem = _check_params(kind, tuple(values))
    if problem is not None:
        raise fail(problem)
    return Delay(kind, tuple(values))


def parse_slow(specs: Iterable[str], workers: int | None) -> dict[int, float]:
    """Parse repeatable ``--slow RANK:FACTOR`` options into ``{rank: factor}``.

    That worker's delays are multiplied by FACTOR (a finite number > 0); 0 <= RANK < workers; a
    rank may appear once. Malformed input raises a one-line :class:`~shmopt.errors.ConfigError`.
    ``workers=None`` checks the form only (a Config field; the ranks are checked once the worker
    count is known).
    """
    if workers is not None:
        integer("workers", workers, 1)
    if isinstance(specs, str):
        specs = [specs]
    bound = "0 <= RANK" if workers is None else f"0 <= RANK < {workers}"
    form = f"expected RANK:FACTOR with {bound} and FACTOR > 0"
    out: dict[int, float] = {}
    for spec in specs:
        shown = str(spec).replace("\n", " ")

        def fail(problem: str) -> ConfigError:
            return ConfigError(f"invalid --slow {shown!r}: {problem}; {form}")

        if not isinstance(spec, str):
            raise fail("not a string")
        parts = spec.strip().split(":")
        if len(parts) != 2:
            raise fail(f"needs exactly one ':', got {len(parts) - 1}")
        rank_text, factor_text = (p.strip() for p in parts)
        try:
            rank = int(rank_text)
        except ValueError:
            raise fail(f"RANK must be an integer, got {rank_text!r}") from None
        if rank < 0 or (workers is not None and rank >= workers):
            raise fail(f"rank {rank} out of range [0, {workers if workers is not None else 'inf'})")
        factor = _number(factor_text)
        if factor is None or math.isnan(factor) or not factor > 0:
            raise fail(f"FACTOR must be a number > 0, got {factor_text!r}")
        if math.isinf(factor):
            raise fail("FACTOR must be finite")
        if rank in out:
            raise fail(f"rank {rank} given twice")
        out[rank] = factor
    return out


__all__ = ["DELAY_FORMS", "Delay", "DelaySampler", "parse_delay", "parse_slow"]
