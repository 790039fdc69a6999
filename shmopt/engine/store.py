"""The parameter store: the shared parameters and rule state, and the version of the parameters.

Two implementations of :class:`ParameterStore`:

* :class:`SummedStore` (the direct protocol, Hogwild): every learner writes ``x`` in place without
  a lock; the version is the sum of the learners' own update counters (single writers, so exact).
* :class:`SeqlockStore` (server protocols): one writer publishes each update under a seqlock
  (``seq`` odd while writing, then ``version += 1``) so learners read consistent copies without
  blocking it. The writer is the applier, or on a relay's node the relay, which publishes the
  parameters the global applier sent (:meth:`SeqlockStore.publish`), with their global version.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Protocol

import numpy as np
import torch


class ParameterStore(Protocol):
    """The learners' view of the shared parameters.

    Contract: ``x`` and ``state`` are the shared buffers (views, never copies); :meth:`version`
    is the number of updates applied so far, exact and monotone; :meth:`read` copies the
    parameters into ``dst`` and returns a version they are at least as new as (SummedStore: the
    copy is lock-free and may mix coordinates of concurrent updates, as Hogwild reads do;
    SeqlockStore: the copy is exactly the parameters of the returned version)."""

    x: torch.Tensor
    state: Mapping[str, torch.Tensor]

    def version(self) -> int: ...

    def read(self, dst: torch.Tensor) -> int: ...


class SummedStore:
    def __init__(self, x: torch.Tensor, state: Mapping[str, torch.Tensor], updates: np.ndarray) -> None:
        self.x, self.state = x, state
        self._updates = updates                 # the learners' "updates" column (a view)

    def version(self) -> int:
        return int(self._updates.sum())

    def read(self, dst: torch.Tensor | None) -> int:
        """The version, then a lock-free copy into ``dst`` (None: read in place, version only)."""
        v = self.version()
        if dst is not None:
            dst.copy_(self.x)
        return v


class SeqlockStore:
    def __init__(self, x: torch.Tensor, state: Mapping[str, torch.Tensor], glob: np.void) -> None:
        self.x, self.state = x, state
        self._glob = glob

    def version(self) -> int:
        return int(self._glob["version"])

    def read(self, dst: torch.Tensor, also: Callable[[], None] | None = None) -> int:
        """Copy the parameters into ``dst`` (and run ``also``: a copy of table rows) at a moment no
        update was being written; their version."""
        glob = self._glob
        while True:
            seq = int(glob["seq"])
            if seq & 1:
                time.sleep(0)
                continue
            dst.copy_(self.x)
            if also is not None:
                also()
            version = int(glob["version"])
            if int(glob["seq"]) == seq:
                return version

    def publish(self, src: torch.Tensor, version: int, also: Callable[[], None] | None = None) -> None:
        """Write parameters computed elsewhere (the global applier's, on a relay's node) with
        their version (and run ``also``: the table rows that came with them), under the seqlock."""
        glob = self._glob
        glob["seq"] += 1
        try:
            self.x.copy_(src)
            if also is not None:
                also()
            glob["version"] = version
        finally:
            glob["seq"] += 1

    @contextmanager
    def writing(self) -> Iterator[int]:
        """The single writer's update: yields the version being written (current + 1)."""
        glob = self._glob
        glob["seq"] += 1
        try:
            yield int(glob["version"]) + 1
            glob["version"] += 1
        finally:
            glob["seq"] += 1
