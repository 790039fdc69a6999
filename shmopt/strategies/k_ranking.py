r"""Which K-variant to run: fit a learner's compute time, predict E[T] and staleness, rank.

The runtime model is the one of :mod:`shmopt.strategies.theory` (Dutta, Joshi, Ghosh, Dube,
Nagpurkar, "Slow and Stale Gradients Can Win the Race", AISTATS 2018): a learner's time per
mini-batch is i.i.d. X = C + D, C its compute time, D the injected delay.

**Fit of C.** Measured compute times c_1..c_n are fitted with a shifted exponential
C ~ s + Exp(mean β), by maximum likelihood: s = min c_i, β = mean(c) − s. For a true shifted
exponential the standard deviation equals β, so the sample standard deviation next to β says how
well the model fits.

**X = C + D for the theory.** The theory takes a constant compute time plus one delay
distribution, so C + D is mapped onto that family:

* D = ``none``: X = s + Exp(β) is ``shifted-exp:s:β`` (exact);
* D = ``exp:b`` or ``shifted-exp:d:b``: Exp(β) + Exp(b) is matched by its first two moments with
  Δ' + Exp(σ), σ = √(β² + b²), Δ' = β + b − σ, so X ≈ ``shifted-exp:s+d+Δ':σ`` (exact when β or
  b is 0; mean and variance always exact);
* D = ``pareto``: C is taken as the constant E[C] = s + β (the heavy tail dominates).

**Expected staleness** τ of an applied gradient (updates between the read of its parameters and
its application), for P learners and K gradients per update:

* k-sync, k-batch-sync, sync: τ = 0 (a gradient overtaken by an update is cancelled);
* k-async: E[τ] = P/K − 1. After an update all P learners compute; with memoryless times the K
  learners that finish first are a uniform K-subset, so a gradient joins each update with
  probability K/P and waits a geometric number of updates: E[τ] = (1 − K/P)/(K/P)
  (exact for exponential times; K = 1 gives P − 1, the paper's async figure; K = P gives 0);
* k-batch-async: E[τ] = (P − 1)/K. While one learner computes a mini-batch of length X, each of
  the P − 1 others (a stationary renewal process of mean E[X]) delivers E[X]/E[X] = 1 mini-batch
  on average, and every K mini-batches make one update (renewal argument, any distribution).

**Ranking.** Rows are ranked by the expected time per update E[T] (ties: lower staleness, then
the order of the table). The recommendation is the first row whose expected staleness is at most
``max_staleness`` (default P: every variant); when it is stale, the fastest staleness-free row is
named too, because stale gradients raise the error floor (Dutta et al., section 5).

Pure module: ``math``, ``dataclasses``, ``numpy`` and the theory.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..checks import integer, number
from ..errors import ConfigError
from .delays import Delay, parse_delay
from .theory import expected_iteration_time

#: The K-variants ranked, each with K = 1..P (sync = k-sync K=P, async = k-async K=1).
ADVISED: tuple[str, ...] = ("k-sync", "k-batch-sync", "k-async", "k-batch-async")


@dataclass(frozen=True)
class ShiftedExpFit:
    """C ~ shift + Exp(mean scale), fitted by maximum likelihood, and the sample it came from."""

    shift: float        # s = min c_i (seconds)
    scale: float        # β = mean(c) − s (seconds)
    n: int
    mean: float
    std: float          # sample standard deviation (≈ scale when the model fits)
    median: float
    p90: float

    @property
    def spec(self) -> str:
        """The fit as a delay spec of :mod:`shmopt.strategies.delays`."""
        return Delay("shifted-exp", (self.shift, self.scale)).spec

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "spec": self.spec}


def fit_shifted_exponential(samples: object) -> ShiftedExpFit:
    """Maximum-likelihood shifted exponential of ``samples`` (seconds; at least 2, finite, >= 0)."""
    try:
        x = np.asarray(samples, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ConfigError("compute-time samples must be numbers (seconds)") from None
    if x.size < 2:
        raise ConfigError(f"need at least 2 compute-time samples to fit, got {x.size}")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ConfigError("compute-time samples must be finite numbers >= 0 (seconds)")
    lo, mean = float(x.min()), float(x.mean())
    return ShiftedExpFit(shift=lo, scale=max(0.0, mean - lo), n=int(x.size), mean=mean,
                         std=float(x.std(ddof=1)), median=float(np.median(x)),
                         p90=float(np.quantile(x, 0.9)))


@dataclass(frozen=True)
class TimeModel:
    """X = compute + delay, in the form :func:`~shmopt.strategies.theory.expected_iteration_time`
    takes (``shmopt theory --delay DELAY --compute COMPUTE`` reproduces every prediction)."""

    delay: Delay
    compute: float
    how: str

    @property
    def mean(self) -> float:
        return self.compute + self.delay.mean

    def to_dict(self) -> dict[str, object]:
        return {"delay": self.delay.spec, "compute": self.compute, "how": self.how,
                "mean": self.mean}


def _sig(x: float) -> float:
    """``x`` to 4 significant digits, so that the printed spec is the one predicted with."""
    return float(f"{x:.4g}")


def time_model(fit: ShiftedExpFit, delay: Delay | str) -> TimeModel:
    """Map the fitted compute time plus the injected delay onto the theory's family (module doc);
    the numbers are rounded to 4 significant digits."""
    d = parse_delay(delay)
    s, beta = fit.shift, fit.scale
    if d.kind == "pareto":
        return TimeModel(d, _sig(s + beta), "compute as its mean E[C] = s + beta, plus the Pareto delay")
    b = d.exp_mean or 0.0
    sigma = math.hypot(beta, b)
    if sigma == 0.0:
        return TimeModel(Delay("none"), _sig(s + d.shift), "constant: compute shift + delay shift")
    shift = s + d.shift + (beta + b - sigma)
    how = "exact: compute fit, no delay" if d.kind == "none" else \
        "compute fit + delay, Exp parts matched by mean and variance: sigma = sqrt(beta^2 + b^2)"
    return TimeModel(Delay("shifted-exp", (_sig(shift), _sig(sigma))), 0.0, how)


def expected_staleness(variant: str, workers: int, k: int) -> tuple[float, str]:
    """``(E[τ], formula)`` of one K-variant with P = ``workers`` learners (module doc)."""
    p = workers
    if not 1 <= k <= p:
        raise ConfigError(f"invalid k={k}: must be 1 <= k <= workers ({p})")
    if variant in ("k-sync", "k-batch-sync", "sync"):
        return 0.0, "0: overtaken gradients are cancelled"
    if variant == "k-async":
        return p / k - 1.0, "P/K - 1: a gradient joins each update with probability K/P"
    if variant == "k-batch-async":
        return (p - 1) / k, "(P-1)/K: P-1 other mini-batches arrive per mini-batch, K make an update"
    raise ConfigError(f"unknown variant {variant!r}: choose one of {', '.join(ADVISED)}")


@dataclass(frozen=True)
class Row:
    """One prediction: an algorithm of ``shmopt run`` with its K."""

    algo: str
    k: int
    time_per_update_s: float
    stderr_s: float | None
    method: str                 # "closed-form" or "simulation"
    formula: str
    staleness: float
    staleness_formula: str
    speedup_vs_sync: float      # E[T] of sync / E[T] of this row

    @property
    def updates_per_s(self) -> float:
        t = self.time_per_update_s
        return math.inf if t == 0 else 1.0 / t

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "updates_per_s": self.updates_per_s}


@dataclass(frozen=True)
class Advice:
    """The ranked table, the recommendation and why."""

    workers: int
    model: TimeModel
    max_staleness: float
    rows: tuple[Row, ...]       # ranked, fastest first
    best: Row
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"workers": self.workers, "time_model": self.model.to_dict(),
                "max_staleness": self.max_staleness, "rows": [r.to_dict() for r in self.rows],
                "recommended": self.best.to_dict(), "reason": self.reason}


def _ms(t: float) -> str:
    return f"{1e3 * t:.3g} ms"


def check_workers(workers: object) -> int:
    return integer("workers", workers, 1, 256)


def check_max_staleness(bound: object, workers: int) -> float:
    """``None`` gives P; otherwise a finite number >= 0."""
    if bound is None:
        return float(workers)
    return number("max_staleness", bound, ge=0)


def rank_variants(model: TimeModel, workers: int, max_staleness: float | None = None,
         iterations: int = 20_000, seed: int = 0) -> Advice:
    """E[T] and E[τ] of every variant in :data:`ADVISED` with K = 1..P, ranked (module doc).

    E[T] is the theory's closed form where one exists, else its seeded simulation of
    ``iterations`` updates.
    """
    p = check_workers(workers)
    bound = check_max_staleness(max_staleness, p)
    raw = []
    for variant in ADVISED:
        for k in range(1, p + 1):
            r = expected_iteration_time(variant, p, k, model.delay, compute=model.compute,
                                        iterations=iterations, seed=seed)
            raw.append((variant, k, r, *expected_staleness(variant, p, k)))
    sync = next(r.expected_iteration_time_s for v, k, r, _, _ in raw if v == "k-sync" and k == p)
    rows = [Row(v, k, r.expected_iteration_time_s, r.stderr, r.method, r.formula, tau, how,
                math.inf if r.expected_iteration_time_s == 0 else sync / r.expected_iteration_time_s)
            for v, k, r, tau, how in raw]
    order = sorted(range(len(rows)), key=lambda i: (rows[i].time_per_update_s, rows[i].staleness, i))
    ranked = tuple(rows[i] for i in order)
    best = next(r for r in ranked if r.staleness <= bound)   # sync (τ = 0) always qualifies
    return Advice(p, model, bound, ranked, best, _reason(ranked, best, bound, sync))


def _reason(ranked: tuple[Row, ...], best: Row, bound: float, sync: float) -> str:
    why = (f"{best.algo} K={best.k}: lowest expected time per update ({_ms(best.time_per_update_s)}"
           + (f", {best.speedup_vs_sync:.3g}x faster than sync's {_ms(sync)}" if best.speedup_vs_sync > 1.0005
              else "") + f") among the variants with expected staleness <= {bound:g}; "
           f"its expected staleness is {best.staleness:.3g}, {best.staleness_formula}")
    top = ranked[0]
    if top is not best:
        why += (f". Faster but excluded: {top.algo} K={top.k} ({_ms(top.time_per_update_s)}, "
                f"staleness {top.staleness:.3g} > {bound:g})")
    if best.staleness > 0:
        fresh = next(r for r in ranked if r.staleness == 0)
        why += (f". If the error floor matters more than speed (stale gradients raise it), the "
                f"fastest staleness-free choice is {fresh.algo} K={fresh.k} at "
                f"{_ms(fresh.time_per_update_s)} per update (--max-staleness 0)")
    return why


__all__ = ["ADVISED", "Advice", "Row", "ShiftedExpFit", "TimeModel", "expected_staleness",
           "fit_shifted_exponential", "rank_variants", "time_model"]
