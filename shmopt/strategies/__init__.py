"""Strategies: which gradient is applied when, with what learning rate (pure logic, no processes)."""
from .algorithms import ALGORITHMS, AlgoSpec, get_algorithm
from .lr import LR_POLICIES, LrPolicy, make_lr_policy
from .server import KAggregator, WorkerMode

__all__ = ["ALGORITHMS", "AlgoSpec", "get_algorithm", "LR_POLICIES", "LrPolicy", "make_lr_policy",
           "KAggregator", "WorkerMode"]
