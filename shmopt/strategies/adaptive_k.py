r"""Adaptive K for k-sync and k-async: few learners early, more as the error floor starts to matter.

Dutta, Wang, Joshi et al., "Slow and Stale Gradients Can Win the Race", IEEE JSAIT 2021 (the
journal version of AISTATS 2018, arXiv 1803.01113): from the error-runtime trade-off they propose
to vary the synchrony during training. Waiting for K learners averages K gradients, which divides
the error floor by K, and costs E[T_K] seconds per update (:mod:`shmopt.strategies.theory`). For
K-sync SGD on a c-strongly convex, L-smooth objective with gradient variance σ² and rate η, the
bound after j updates is

    E[F(w_j)] − F* ≤ φ/K + (1 − ηc)^j (F(w_0) − F* − φ/K),      φ = ηLσ²/(2c),

and with j ≈ t / E[T_K] updates in t seconds the excess error e = F(w) − F* decays at

    r_K(e) = −de/dt = λ (e − φ/K) / E[T_K],                       λ = −ln(1 − ηc).

Small K has the small E[T_K], so it wins while e ≫ φ/K; once the loss has reached K's floor
(e ≈ φ/K, r_K ≈ 0) a larger K' still makes progress, at

    r_{K'}(φ/K) = λφ (1/K − 1/K') / E[T_{K'}]   > 0.

The schedule below is shmopt's own rule built on that model (not a transcription of the paper's
switching times); it needs no unknown constant (neither φ, λ nor F*):

* **When** (a plateau of the eval loss, like ``torch.optim.lr_scheduler.ReduceLROnPlateau``):
  an evaluation improves if its loss is below ``best − tol·|best|``; after ``patience``
  evaluations in a row without an improvement the current K is taken to be at its floor and K
  rises one rung of the ladder (the count restarts, so every K gets ``patience`` evaluations).
* **To which K** (the ladder, computed once from the delay law): from K, the next rung is the K'
  in (K, P] that maximises the progress per second above, ``(1/K − 1/K') / E[T_{K'}]`` (ties:
  the smallest). With exponential delays and P = 4 this is 1 → 2 → 3 → 4; a shifted
  exponential, whose constant part makes waiting for more learners cheap, climbs faster. With no
  delay law (``none``: E[T] is compute only, unknown here) each rung is K + 1.

K starts at 1, never falls and never exceeds P; it is a deterministic function of the sequence of
eval losses (:meth:`KSchedule.k_after`), and :class:`KTracker` is the same rule one evaluation at
a time (the supervisor's). The k-async ladder uses k-async's E[T] with the K-sync error model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from ..checks import integer, invalid, number
from ..errors import ConfigError
from .delays import Delay, parse_delay

ADAPTIVE = "adaptive"
#: the variants whose K may change during a run (distinct learners; see ``server.KAggregator``)
ADAPTIVE_VARIANTS = ("k-sync", "k-async")
DEFAULT_PATIENCE = 3        # evaluations without an improvement before K rises
DEFAULT_TOL = 1e-3          # an improvement: below best - tol * |best|
_LADDER_SIM_ITERATIONS = 5000   # simulated E[T] (no closed form): only ratios are used


def parse_k(value: int | str | None) -> int | str | None:
    """``--k``: None (the algorithm's default), a positive integer (or its digits) or
    ``"adaptive"``; anything else is a ConfigError."""
    if value is None or value == ADAPTIVE:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid("k", value, f"must be an integer >= 1 (at most the workers) or {ADAPTIVE}")
    return value


def next_k(k: int, times: Sequence[float]) -> int:
    """The rung after ``k`` (1 <= k < P): argmax over K' in (k, P] of (1/k − 1/K') / E[T_{K'}],
    ``times[K' − 1]`` = E[T_{K'}]; k + 1 when no time is positive and finite (no delay law)."""
    best, best_rate = k + 1, -1.0
    for kk in range(k + 1, len(times) + 1):
        t = times[kk - 1]
        if not (t > 0 and math.isfinite(t)):
            continue
        rate = (1.0 / k - 1.0 / kk) / t
        if rate > best_rate:
            best, best_rate = kk, rate
    return best


def ladder_from_times(times: Sequence[float], start: int = 1) -> tuple[int, ...]:
    """Every K the schedule can visit, from ``start`` up to P = len(times)."""
    out = [start]
    while out[-1] < len(times):
        out.append(next_k(out[-1], times))
    return tuple(out)


def k_ladder(variant: str, workers: int, delay: Delay | str) -> tuple[int, ...]:
    """The ladder of ``variant`` with P = ``workers`` under ``delay``, from the runtime theory
    (closed forms, else a seeded simulation: deterministic)."""
    from .theory import expected_iteration_time
    d = parse_delay(delay) if isinstance(delay, str) else delay
    if d.kind == "none":
        times = [0.0] * workers
    else:
        times = [expected_iteration_time(variant, workers, k, d, iterations=_LADDER_SIM_ITERATIONS)
                 .expected_iteration_time_s for k in range(1, workers + 1)]
    return ladder_from_times(times)


def _improves(loss: float, best: float, tol: float) -> bool:
    return math.isfinite(loss) and (not math.isfinite(best) or loss < best - tol * abs(best))


@dataclass(frozen=True)
class KSchedule:
    """The adaptive-K rule: a ladder of K values, a patience (evaluations) and a tolerance."""

    ladder: tuple[int, ...]
    patience: int = DEFAULT_PATIENCE
    tol: float = DEFAULT_TOL

    def __post_init__(self) -> None:
        if not self.ladder or any(b <= a for a, b in zip(self.ladder, self.ladder[1:])) \
                or self.ladder[0] < 1:
            raise ConfigError(f"invalid K ladder {self.ladder}: must rise from K >= 1")
        integer("k-patience", self.patience, 1)
        number("tolerance", self.tol, ge=0, lt=1)

    @property
    def start(self) -> int:
        return self.ladder[0]

    def k_after(self, losses: Sequence[float | None]) -> int:
        """K after the given eval losses (in order; None or NaN counts as no improvement)."""
        tracker = KTracker(self)
        for loss in losses:
            tracker.observe(loss)
        return tracker.k


@dataclass
class KTracker:
    """:class:`KSchedule` one evaluation at a time: ``observe(loss)`` returns the K to use now."""

    schedule: KSchedule
    rung: int = 0
    best: float = math.inf
    bad: int = 0
    changes: list[int] = field(default_factory=list)   # evaluation indices at which K rose
    seen: int = 0

    @classmethod
    def resumed(cls, schedule: KSchedule, k: int) -> "KTracker":
        """Continue at K (a checkpoint's): the highest rung not above it."""
        rungs = [i for i, kk in enumerate(schedule.ladder) if kk <= k]
        return cls(schedule, rung=rungs[-1] if rungs else 0)

    @property
    def k(self) -> int:
        return self.schedule.ladder[self.rung]

    def observe(self, loss: float | None) -> int:
        s = self.schedule
        loss = math.nan if loss is None else float(loss)
        if _improves(loss, self.best, s.tol):
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if self.bad >= s.patience and self.rung < len(s.ladder) - 1:
            self.rung += 1
            self.bad = 0
            self.changes.append(self.seen)
        self.seen += 1
        return self.k


def check_adaptive(algo: str, variant: str, nodes: int) -> None:
    """``--k adaptive`` is for k-sync and k-async on one node: one ConfigError line otherwise."""
    if algo not in ADAPTIVE_VARIANTS or variant not in ADAPTIVE_VARIANTS:
        raise ConfigError(f"--k adaptive is for {' and '.join(ADAPTIVE_VARIANTS)} only, not {algo} "
                          f"(give a number: --k K)")
    if nodes > 1:
        raise ConfigError("--k adaptive runs on one node only (across nodes the global applier's K "
                          "is fixed: give --k K)")


__all__ = ["ADAPTIVE", "ADAPTIVE_VARIANTS", "DEFAULT_PATIENCE", "DEFAULT_TOL", "KSchedule",
           "KTracker", "check_adaptive", "k_ladder", "ladder_from_times", "next_k", "parse_k"]
