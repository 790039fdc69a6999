"""The contract of a replica method: every worker trains a replica of its own, coupled to the
others every so often.

A replica method is one frozen, picklable dataclass (its validated settings) that answers every
question the engine asks about it, so the engine names no method:

* :meth:`from_options` — its settings from a run's options (ConfigError for a bad one);
* :meth:`buffers` — the shared buffers it needs besides the replicas (a centre, a published
  global leader), :attr:`scratch` — which of them a checkpoint leaves out, :meth:`init` — their
  start;
* :meth:`coupler` — in each worker, what happens after every local step: its **pull rule** (the
  arithmetic is in ``shmopt.rules``) and when it is due (:func:`~shmopt.strategies.leader.due`);
* :meth:`leader` — who the leader is now (methods with one), :meth:`model` — which tensor is
  "the model" the supervisor evaluates, checkpoints and returns;
* across nodes: :attr:`node_exchange` — which exchange the node link runs (a name registered in
  ``shmopt.engine.nodes``: ``"delta"`` averages the buffers named in :attr:`exchanged` by their
  delta, ``"leader"`` finds and publishes the best replica of all nodes), every
  ``tau_global`` steps of each worker; :attr:`across_nodes` says it in words.

Adding a method (gossip, SWA, ...) is one new module defining a subclass plus one line in the
registry of :mod:`shmopt.strategies.replicas`; the algorithm table, the plan, the arena, the
loops, the supervisor and the node link pick it up from there.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from torch import Tensor

from ...errors import ConfigError

Spec = tuple[str, tuple[int, ...]]          # (buffer name, shape): float32, on the arena's device


class Coupler(Protocol):
    """One worker's side of a replica method (built in the worker, never pickled)."""

    def after_step(self, step: int, total: int) -> int:
        """Called after this worker's ``step``-th local update (``total``: updates of all the
        node's workers); couples the replica when due; returns the pulls it made."""


@dataclass(frozen=True)
class ReplicaMethod(abc.ABC):
    """Settings every replica method shares; subclasses add their own fields."""

    name: ClassVar[str]
    summary: ClassVar[str]                          # one line for `shmopt algos`
    rule: ClassVar[str] = "sgd"                     # default update rule
    rules: ClassVar[tuple[str, ...]] = ("sgd", "amsgrad", "adam")
    node_exchange: ClassVar[str] = "delta"
    exchanged: ClassVar[tuple[str, ...]] = ()       # buffers the "delta" exchange averages
    across_nodes: ClassVar[str] = ""
    scratch: ClassVar[tuple[str, ...]] = ()         # buffers a checkpoint leaves out
    has_leader: ClassVar[bool] = False
    leader_buffer: ClassVar[str] = ""               # the "leader" exchange: where it publishes (2 x n)

    workers: int
    tau: int                                        # local steps between couplings
    trigger: str                                    # "worker" (own steps) or "total" (all steps)
    independent_init: bool                          # each replica starts from its own init
    tau_global: int = 1                             # across nodes: steps between exchanges

    @classmethod
    def common(cls, o: Any, workers: int) -> dict[str, Any]:
        """The shared settings from the run's options ``o`` (tau, trigger, replica_init; each option's
        own range was checked on the Config)."""
        if o.max_staleness is not None:
            raise ConfigError(f"--max-staleness does not apply to {cls.name}: replicas take no stale "
                              f"gradients")
        return {"workers": workers, "tau": o.tau, "trigger": o.trigger,
                "independent_init": o.replica_init == "independent", "tau_global": o.tau_global}

    @classmethod
    @abc.abstractmethod
    def from_options(cls, o: Any, workers: int, nnodes: int) -> "ReplicaMethod":
        """The validated settings from a run's options (attributes of shmopt.Config)."""

    def buffers(self, n: int, nnodes: int) -> list[Spec]:
        """Shared buffers besides the replicas (n: parameters per replica)."""
        return []

    def init(self, extra: Mapping[str, Tensor], x0: Tensor) -> None:
        """Initialise :meth:`buffers` from the common start ``x0`` (a fresh run, not a resume);
        nothing by default."""
        return None

    def group_of(self, rank: int) -> int:
        """The group of a worker (multi-leader methods); 0 otherwise."""
        return 0

    def leader(self, losses: np.ndarray, counts: np.ndarray) -> int | None:
        """The worker leading now, from the loss rings of the control block; None: no leader."""
        return None

    def local_leader(self, losses: np.ndarray, counts: np.ndarray) -> tuple[int, float]:
        """(this node's leader, its score: lower is better), for the "leader" exchange; a method
        that names that exchange defines it (and :attr:`leader_buffer`)."""
        raise NotImplementedError(f"{self.name} has no leader to exchange across nodes")

    @abc.abstractmethod
    def model(self, X: Tensor, mbuf: Tensor | None, extra: Mapping[str, Tensor], glob: np.void,
              leader: int | None) -> tuple[Tensor, Tensor | None]:
        """(flat parameters, flat module buffers or None) of "the model" (no copy)."""

    @abc.abstractmethod
    def coupler(self, rank: int, X: Tensor, extra: Mapping[str, Tensor], ctrl: np.ndarray,
                glob: np.void, node: int) -> Coupler:
        """Worker ``rank``'s coupler over the replicas ``X`` (one row per worker) and the
        method's buffers; ``ctrl``: the node's control slots; ``node``: this node's rank."""


CENTER = "center"


@dataclass(frozen=True)
class CentredMethod(ReplicaMethod, abc.ABC):
    """A method whose model is one shared centre x̃ (easgd's centre, local SGD's average): one
    buffer, started at x0, averaged by its delta across nodes; its module statistics are the
    replicas' mean (a centre has none of its own)."""

    exchanged: ClassVar[tuple[str, ...]] = (CENTER,)

    def buffers(self, n: int, nnodes: int) -> list[Spec]:
        return [(CENTER, (n,))]

    def init(self, extra: Mapping[str, Tensor], x0: Tensor) -> None:
        extra[CENTER].copy_(x0)

    def model(self, X: Tensor, mbuf: Tensor | None, extra: Mapping[str, Tensor], glob: np.void,
              leader: int | None) -> tuple[Tensor, Tensor | None]:
        return extra[CENTER], None if mbuf is None else mbuf.mean(0)
