"""Leader selection and pull schedules for replica protocols (pure logic over counters).

Leader SGD (Teng et al., "Leader Stochastic Gradient Descent for Distributed Training of Deep
Learning Models", NeurIPS 2019): every worker records its recent mini-batch losses in its loss
slot; the leader of a set of workers is the argmin of their windowed mean losses (the last W
losses; ties go to the lowest rank; a worker with no loss yet is never the leader unless nobody
has one). With G groups (multi-leader) the workers are split into G contiguous groups of P/G; each
group has a local leader, and the global leader is the best of all.

Pulls are triggered by each worker's own step count (lock-free, ours), or — the reference's
trigger — when the total number of steps over all workers crosses a multiple of P·τ.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

TRIGGERS = ("worker", "total")
LOSS_WINDOW = 16   # capacity of each worker's ring of recent mini-batch losses (the control block)


def windowed_means(losses: np.ndarray, counts: Sequence[int], window: int) -> list[float]:
    """Mean of the last ``window`` losses of each worker (ring buffers of capacity losses.shape[1]);
    +inf for a worker with no loss yet."""
    cap = losses.shape[1]
    means = []
    for ring, count in zip(losses, counts):
        count = int(count)
        if count <= 0:
            means.append(math.inf)
            continue
        w = min(window, count, cap)
        idx = [(count - 1 - i) % cap for i in range(w)]
        means.append(float(np.mean(ring[idx])))
    return means


def select_leader(means: Sequence[float], ranks: Sequence[int] | None = None) -> int:
    """argmin of the windowed means over ``ranks`` (all by default); ties to the lowest rank;
    non-finite means (NaN, no loss yet) lose to any finite one."""
    ranks = list(range(len(means))) if ranks is None else sorted(ranks)
    if not ranks:
        raise ValueError("no workers to select a leader from")
    best = ranks[0]
    for r in ranks[1:]:
        if _key(means[r]) < _key(means[best]):
            best = r
    return best


def _key(m: float) -> float:
    return m if math.isfinite(m) else math.inf


def groups(workers: int, n_groups: int) -> list[list[int]]:
    """Contiguous groups of equal size."""
    if n_groups < 1 or workers % n_groups:
        raise ConfigError(f"invalid groups={n_groups}: must divide the workers ({workers}) evenly")
    size = workers // n_groups
    return [list(range(g * size, (g + 1) * size)) for g in range(n_groups)]


def due(step: int, tau: int, trigger: str = "worker", total: int = 0, last_total: int = 0,
        workers: int = 1) -> bool:
    """Is a pull of period ``tau`` due after this worker's ``step``-th local step?

    ``worker``: every tau of its own steps. ``total``: the total steps over all workers crossed a
    multiple of workers·tau since this worker's previous check (``last_total``)."""
    if trigger == "worker":
        return step > 0 and step % tau == 0
    period = workers * tau
    return total // period > last_total // period
