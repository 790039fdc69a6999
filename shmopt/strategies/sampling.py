"""Which training rows a learner's next mini-batch takes (``--sampling``).

* ``replace`` (default): B rows drawn uniformly with replacement, independently per batch.
* ``shuffle``: each learner walks its own random permutation of all N rows, B at a time; a new
  permutation starts each epoch (the rows left over at the end of one carry into the next).
* ``shard``: the N rows are cut into L disjoint shards, one per learner (L = workers over all
  nodes), and each learner shuffles its own shard epoch by epoch: no two learners ever see the
  same row.

Pure: the rows come from the learner's own generator (seed + rank), so a run is reproducible.
"""
from __future__ import annotations

import torch

from ..checks import choice
from ..errors import ConfigError

SAMPLING = ("replace", "shuffle", "shard")


def shard_of(n: int, learner: int, learners: int) -> tuple[int, int]:
    """Rows [start, stop) of learner ``learner``'s shard (sizes differ by at most one)."""
    return learner * n // learners, (learner + 1) * n // learners


def check_sampling(mode: str, n: int, batch: int, learners: int) -> None:
    """``--sampling`` against the data: a shard must hold a batch."""
    choice("sampling", mode, SAMPLING)
    if mode == "shard" and n // learners < batch:
        raise ConfigError(f"--sampling shard: {n} rows over {learners} learners leave shards of "
                          f"{n // learners} rows, fewer than the batch size {batch}")


class Sampler:
    def __init__(self, mode: str, n: int, batch: int, learner: int, learners: int,
                 generator: torch.Generator) -> None:
        self.mode, self.batch, self.g = mode, batch, generator
        self.start, stop = shard_of(n, learner, learners) if mode == "shard" else (0, n)
        self.rows = stop - self.start
        self._order = torch.empty(0, dtype=torch.long)
        self.epochs = 0                       # permutations begun (shuffle, shard)

    def next(self) -> torch.Tensor:
        """The row indices of the next mini-batch."""
        if self.mode == "replace":
            return torch.randint(self.rows, (self.batch,), generator=self.g)
        while self._order.numel() < self.batch:
            self._order = torch.cat([self._order, torch.randperm(self.rows, generator=self.g)])
            self.epochs += 1
        idx, self._order = self._order[:self.batch], self._order[self.batch:]
        return idx + self.start
