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
from .position import new_pass

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


def order_capacity(mode: str, n: int, learners: int) -> int:
    """Rows of a learner's order (its current permutation): N, a shard, or 0 under ``replace``."""
    if mode == "replace":
        return 0
    return n if mode == "shuffle" else -(-n // learners)


class Sampler:
    """A learner's mini-batches. Under ``shuffle`` and ``shard`` its current permutation lives in
    ``order`` (absolute row numbers) and its position in ``state`` (``s_epoch``: permutations begun,
    ``s_len``: rows in ``order``, ``s_off``: rows handed out): both are shared, so a checkpoint holds
    them and a resumed or restarted learner goes on where it was, each row of an epoch seen once.
    ``order`` may start with rows left over from another worker count (``s_len`` of them): they are
    handed out first, then the learner's own permutations begin."""

    def __init__(self, mode: str, n: int, batch: int, learner: int, learners: int,
                 generator: torch.Generator, order: torch.Tensor | None = None, state=None) -> None:
        self.mode, self.batch, self.g = mode, batch, generator
        self.start, stop = shard_of(n, learner, learners) if mode == "shard" else (0, n)
        self.rows = stop - self.start
        if mode != "replace" and order is None:        # a private one (tests, a single process)
            order = torch.empty(self.rows, dtype=torch.int64)
        if mode != "replace" and order.numel() < self.rows:
            raise ValueError(f"--sampling {mode} needs an order of at least {self.rows} rows")
        self.order = order
        self.state = state if state is not None else {"s_epoch": 0, "s_off": 0, "s_len": 0}

    @property
    def epochs(self) -> int:
        """Permutations begun (shuffle, shard)."""
        return int(self.state["s_epoch"])

    def _new_epoch(self) -> None:
        def write_order() -> None:
            self.order[:self.rows] = torch.randperm(self.rows, generator=self.g) + self.start
        new_pass(self.state, self.rows, write_order)     # in the order a live checkpoint reads

    def next(self) -> torch.Tensor:
        """The row indices of the next mini-batch (the rows left in one epoch carry into the next)."""
        if self.mode == "replace":
            return torch.randint(self.rows, (self.batch,), generator=self.g)
        st, parts, need = self.state, [], self.batch
        while need:
            off, length = int(st["s_off"]), int(st["s_len"])
            if off >= length:
                self._new_epoch()
                continue
            take = min(need, length - off)
            parts.append(self.order[off:off + take].to(torch.int64, copy=True))
            st["s_off"], need = off + take, need - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)
