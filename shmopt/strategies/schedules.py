"""Learning-rate schedules on the global update count.

A schedule maps (base rate α, global update count k = 0, 1, ...) to the base rate of update k;
the staleness policies (:mod:`.lr`) then scale that rate. k counts the updates of the shared
parameters (the arena's counters, not one worker's own steps), so 1 and 8 workers follow the same
curve per update; ``K`` is the run's step budget and ``w`` the warm-up.

* ``constant``: α.
* ``inv-sqrt[:S]``: α_k = min(c / √(k+1), α) with c = α·√S (S = 100 by default): α for the first S
  updates, then α·√(S/(k+1)). The decaying step of APAM's convergence analysis (Xu et al., arXiv
  2002.09095: α_k of order 1/√k).
* ``cosine[:F]``: α·(F + (1-F)·(1 + cos(π·p)) / 2), p = (k-w)/(K-w) in [0, 1]: from α down to the
  floor F·α (F = 0 by default; Loshchilov & Hutter, SGDR, without restarts).
* ``linear[:F]``: α·(1 - (1-F)·p).
* ``exp:G``: α·G^p: down to G·α at the end of the budget (0 < G < 1).
* ``step:N[:G]``: α·G^⌊(k-w)/N⌋: times G (0.1 by default) every N updates.

A warm-up of w updates multiplies the rate by (k+1)/w for k < w (linear, from α/w to α); the decay
starts after it. ``cosine``, ``linear`` and ``exp`` need the step budget K > w.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

SCHEDULES = ("constant", "inv-sqrt", "cosine", "linear", "exp", "step")
NEEDS_BUDGET = ("cosine", "linear", "exp")
_FORMS = "constant, inv-sqrt[:S], cosine[:FLOOR], linear[:FLOOR], exp:G or step:N[:G]"


@dataclass(frozen=True)
class LrSchedule:
    """A parsed schedule: ``name``, its number ``a`` (S, FLOOR, G or N) and ``b`` (step's G),
    the warm-up ``warmup`` and the step budget ``budget`` (K)."""

    name: str = "constant"
    a: float = 0.0
    b: float = 0.0
    warmup: int = 0
    budget: int | None = None

    @property
    def label(self) -> str:
        """The schedule as the option spells it, with its warm-up."""
        nums = {"inv-sqrt": [self.a], "cosine": [self.a], "linear": [self.a], "exp": [self.a],
                "step": [self.a, self.b]}.get(self.name, [])
        text = ":".join([self.name, *(f"{v:g}" for v in nums)])
        return text + (f" (warm-up {self.warmup})" if self.warmup else "")

    def factor(self, k: int) -> float:
        """The base rate of update ``k`` (0-based) as a multiple of α."""
        w = self.warmup
        scale = (k + 1) / w if k < w else 1.0
        if self.name == "constant":
            return scale
        if self.name == "inv-sqrt":
            return scale * min(1.0, math.sqrt(self.a / (k + 1)))
        if self.name == "step":
            return scale * self.b ** (max(0, k - w) // int(self.a))
        p = min(1.0, max(0, k - w) / (self.budget - w))      # type: ignore[operator]
        if self.name == "cosine":
            return scale * (self.a + (1 - self.a) * (1 + math.cos(math.pi * p)) / 2)
        if self.name == "linear":
            return scale * (1 - (1 - self.a) * p)
        return scale * self.a ** p                               # exp


#: The schedule to run by rule, from bench/test_time_to_accuracy.py (time to a target accuracy,
#: every algorithm at the problem's rate) and bench/test_schedules.py (the gap at a step budget):
#: to reach a target soonest, the constant rate (the default) was first or within the spread for
#: hogwild and sync everywhere and for apam on 2 of 4 problems (cosine at the same rate was sooner
#: on mlp and digits, later on fashion-mnist's 0.88, and needs the budget); with a fixed budget, an
#: adaptive rule at about 10x the rate decayed by cosine ended closest to the optimum (apam 0.14%
#: against 1.53% constant), while a cosine decay made hogwild's SGD end further away.
ADAPTIVE_RULES = ("amsgrad", "adam")


def recommend(rule: str) -> dict[str, str]:
    """The recommended ``--lr-schedule`` for an algorithm running ``rule``: ``target`` (to reach a
    target soonest; the default), ``budget`` (for the best model at a fixed ``--steps``) and
    ``why``."""
    if rule in ADAPTIVE_RULES:
        return {"target": "constant", "budget": "cosine",
                "why": f"{rule}: the constant rate reaches a target soonest; on a fixed --steps budget "
                       "a rate about 10x the constant one with cosine ends closest to the optimum"}
    if rule == "sgd":
        return {"target": "constant", "budget": "constant",
                "why": "sgd: the constant rate reaches a target soonest, and a cosine decay made it end "
                       "further from the optimum on a fixed budget"}
    return {"target": "constant", "budget": "constant", "why": f"{rule}: not measured; the default"}


def _numbers(spec: str, parts: list[str]) -> list[float]:
    try:
        out = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"invalid lr-schedule={spec!r}: its numbers must be numbers; "
                          f"use {_FORMS}") from None
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"invalid lr-schedule={spec!r}: its numbers must be finite; use {_FORMS}")
    return out


def parse_schedule(spec: str, warmup: int = 0, budget: int | None = None, *,
                   check_budget: bool = True) -> LrSchedule:
    """Parse ``--lr-schedule`` (see the module docstring) with ``--lr-warmup`` and the step
    budget (not checked with ``check_budget=False``: the form alone); raises
    :class:`ConfigError` with one line naming what is wrong."""
    name, *rest = str(spec).strip().split(":")
    if name not in SCHEDULES:
        raise ConfigError(f"invalid lr-schedule={spec!r}: use {_FORMS}")
    nums = _numbers(spec, rest)
    arity = {"constant": (0, 0), "inv-sqrt": (0, 1), "cosine": (0, 1), "linear": (0, 1), "exp": (1, 1),
             "step": (1, 2)}[name]
    if not arity[0] <= len(nums) <= arity[1]:
        raise ConfigError(f"invalid lr-schedule={spec!r}: {name} takes {arity[0]} to {arity[1]} number(s); "
                          f"use {_FORMS}")
    a = nums[0] if nums else {"inv-sqrt": 100.0}.get(name, 0.0)
    b = nums[1] if len(nums) > 1 else 0.1
    bad = {"inv-sqrt": not a >= 1 and "S must be >= 1",
           "cosine": not 0 <= a < 1 and "FLOOR must be in [0, 1)",
           "linear": not 0 <= a < 1 and "FLOOR must be in [0, 1)",
           "exp": not 0 < a < 1 and "G must be in (0, 1)",
           "step": (not (a >= 1 and a == int(a)) and "N must be a whole number >= 1")
           or (not 0 < b < 1 and "G must be in (0, 1)")}.get(name)
    if bad:
        raise ConfigError(f"invalid lr-schedule={spec!r}: {bad}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ConfigError(f"invalid lr-warmup={warmup!r}: must be a whole number of updates >= 0")
    if check_budget and name in NEEDS_BUDGET and (budget is None or budget <= warmup):
        raise ConfigError(f"the {name} lr schedule decays over the step budget: give --steps greater "
                          f"than --lr-warmup ({warmup})" + ("" if budget is None else f", not {budget}"))
    return LrSchedule(name, a, b, warmup, budget)
