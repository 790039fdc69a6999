"""Leader selection over loss slots, pull schedules and pull arithmetic: no processes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shmopt.errors import ConfigError
from shmopt.rules.consensus import average_into, elastic_, leader_pull_, sq_distance
from shmopt.strategies.leader import due, groups, select_leader, windowed_means


def ring(values, cap=4):
    """Write values into a ring of capacity cap the way the workers do; returns (ring, count)."""
    r = np.zeros(cap)
    for i, v in enumerate(values):
        r[i % cap] = v
    return r, len(values)


def test_windowed_means_use_the_last_w_losses_across_the_ring_wrap():
    r0, c0 = ring([9, 9, 9, 1, 2, 3])          # wrapped: last three are 1, 2, 3
    r1, c1 = ring([5])
    r2, c2 = ring([])
    means = windowed_means(np.stack([r0, r1, r2]), [c0, c1, c2], window=3)
    assert means[0] == pytest.approx(2.0) and means[1] == 5.0 and means[2] == math.inf
    assert windowed_means(np.stack([r0]), [c0], window=10)[0] == pytest.approx((9 + 1 + 2 + 3) / 4)


def test_leader_is_the_argmin_ties_to_the_lowest_rank_nan_never_wins():
    assert select_leader([3.0, 1.0, 2.0]) == 1
    assert select_leader([2.0, 1.0, 1.0]) == 1              # tie -> lowest rank
    assert select_leader([math.nan, 5.0, math.inf]) == 1
    assert select_leader([math.inf, math.inf]) == 0          # nobody has a loss yet
    assert select_leader([0.1, 3.0, 2.0, 4.0], ranks=[2, 3]) == 2   # within a group only


def test_groups_split_contiguously_and_must_divide():
    assert groups(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert groups(4, 1) == [[0, 1, 2, 3]]
    with pytest.raises(ConfigError, match="invalid groups=4: must divide the workers \\(6\\)"):
        groups(6, 4)


def test_pull_triggers():
    assert [s for s in range(1, 31) if due(s, 10)] == [10, 20, 30]
    # total trigger: P=4, tau=10 -> a pull each time the total crosses a multiple of 40
    assert due(0, 10, "total", total=40, last_total=39, workers=4)
    assert not due(0, 10, "total", total=41, last_total=40, workers=4)
    assert due(0, 10, "total", total=85, last_total=79, workers=4)


def test_pull_and_elastic_arithmetic():
    x, lead = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    leader_pull_(x, lead, 0.25)                      # x - 0.25 (x - leader)
    assert torch.allclose(x, torch.tensor([0.25, 1.5]))
    x, c = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])
    total = x + c
    elastic_(x, c, 0.5)                              # e = 0.5 (x - c) = [1, -1]
    assert torch.allclose(x, torch.tensor([1.0, 0.0])) and torch.allclose(c, torch.tensor([1.0, 0.0]))
    assert torch.allclose(x + c, total)              # the exchange conserves x + centre


def test_average_and_distance():
    out = torch.empty(2)
    assert average_into(out, [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])]) is out
    assert torch.allclose(out, torch.tensor([2.0, 4.0]))
    assert sq_distance(torch.tensor([1.0, 1.0]), torch.tensor([4.0, 5.0])) == pytest.approx(25.0)
