"""Learning-rate policies for stale gradients.

* ``constant``: η.
* ``staleness``: η / max(1, τ) (Zhang et al. 2016, "Staleness-aware async-SGD").
* ``dutta``: η_j = min(C / ‖w_j − w_τ(j)‖², η_max) where w_j are the parameters when the gradient is
  applied and w_τ(j) those it was computed on (Dutta et al., AISTATS 2018, section 5); η_max also
  covers the fresh case (distance 0).

A policy maps (base η, staleness τ, squared distance or None) to the η actually used. The caller
computes the distance only when ``needs_distance`` is true (it costs a pass over the parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..checks import choice, number
from ..errors import ConfigError


@dataclass(frozen=True)
class LrPolicy:
    name: str = "constant"
    c: float | None = None          # dutta: C
    eta_max: float | None = None    # dutta: η_max (defaults to the base η)

    @property
    def needs_distance(self) -> bool:
        return self.name == "dutta"

    def __call__(self, lr: float, tau: int, sqdist: float | None = None) -> float:
        if self.name == "constant":
            return lr
        if self.name == "staleness":
            return lr / max(1, tau)
        eta_max = lr if self.eta_max is None else self.eta_max
        if sqdist is None or not math.isfinite(sqdist):
            raise ValueError("the dutta policy needs the squared parameter distance")
        if sqdist <= 0.0:
            return eta_max
        return min(self.c / sqdist, eta_max)   # type: ignore[operator]


LR_POLICIES = ("constant", "staleness", "dutta")


def check_policy_options(name: str, c: float | None, eta_max: float | None) -> None:
    """The cross-field rule of the policy options: dutta needs C, and C / eta_max belong to dutta."""
    if name == "dutta" and c is None:
        raise ConfigError("the dutta lr policy needs --lr-c C (C > 0)")
    if name != "dutta" and (c is not None or eta_max is not None):
        raise ConfigError(f"--lr-c and --lr-max belong to the dutta lr policy, not {name!r}")


def make_lr_policy(name: str = "constant", c: float | None = None,
                   eta_max: float | None = None) -> LrPolicy:
    choice("lr-policy", name, LR_POLICIES)
    if c is not None:
        c = number("lr-c", c, gt=0)
    if eta_max is not None:
        eta_max = number("lr-max", eta_max, gt=0)
    check_policy_options(name, c, eta_max)
    return LrPolicy(name, c, eta_max)
