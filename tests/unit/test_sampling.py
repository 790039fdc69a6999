"""Mini-batch row sampling: shuffle visits every row once per epoch, shards are disjoint and
cover the data, replace stays in range (a sharded run: tests/integration/test_engine.py)."""
from __future__ import annotations

import pytest
import torch

from shmopt.errors import ConfigError
from shmopt.strategies.sampling import Sampler, check_sampling, shard_of


def draw(s: Sampler, batches: int) -> list[int]:
    return torch.cat([s.next() for _ in range(batches)]).tolist()


def test_shuffle_visits_every_row_once_per_epoch():
    s = Sampler("shuffle", 12, 4, 0, 1, torch.Generator().manual_seed(0))
    rows = draw(s, 6)                                   # two epochs of 3 batches
    assert sorted(rows[:12]) == list(range(12)) and sorted(rows[12:]) == list(range(12))
    assert s.epochs == 2 and rows[:12] != rows[12:]     # a new permutation each epoch


def test_shards_are_disjoint_and_cover_the_data():
    n, learners = 10, 3
    seen = []
    for r in range(learners):
        s = Sampler("shard", n, 2, r, learners, torch.Generator().manual_seed(r))
        lo, hi = shard_of(n, r, learners)
        rows = set(draw(s, 12))
        assert rows == set(range(lo, hi))               # its own shard, all of it
        seen.append(rows)
    assert set().union(*seen) == set(range(n)) and sum(map(len, seen)) == n


def test_replace_draws_in_range_and_bad_modes_are_refused():
    s = Sampler("replace", 5, 100, 0, 1, torch.Generator().manual_seed(0))
    rows = s.next()
    assert rows.min() >= 0 and rows.max() < 5 and s.epochs == 0
    with pytest.raises(ConfigError, match="invalid sampling='stride'"):
        check_sampling("stride", 10, 2, 1)
    with pytest.raises(ConfigError, match="shards of 2 rows, fewer than the batch size 3"):
        check_sampling("shard", 10, 3, 4)
