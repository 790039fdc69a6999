"""Replica methods: every worker trains its own replica; the method couples them (its pull rule,
its leader or centre, what it exchanges across nodes and how often). The contract is
:class:`~shmopt.strategies.replicas.base.ReplicaMethod`; a new method is one module plus one line
in :data:`REPLICA_METHODS`."""
from __future__ import annotations

from .base import Coupler, ReplicaMethod
from .elastic import ElasticAveraging
from .leader_sgd import LeaderSGD
from .local_sgd import LocalSGD

#: every replica method by its algorithm name
REPLICA_METHODS: dict[str, type[ReplicaMethod]] = {m.name: m for m in (LeaderSGD, ElasticAveraging, LocalSGD)}

__all__ = ["REPLICA_METHODS", "ReplicaMethod", "Coupler", "LeaderSGD", "ElasticAveraging", "LocalSGD"]
