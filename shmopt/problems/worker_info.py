"""``shmopt.worker_info()``: which engine process the calling code runs in, for user code (a model
factory, a loss, a stream that shards itself) in the spirit of ``torch.utils.data.get_worker_info()``.
The engine sets it in each process it starts."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerInfo:
    rank: int           # 0..workers-1 for learners; workers for the applier of server protocols
    workers: int
    group: int          # lsgd: the rank's group (multi-leader); 0 otherwise
    seed: int           # the seed this process was given (seed + rank)
    device: str
    learner: int = 0    # this learner over all nodes (node rank x workers + rank): a stream's share
    learners: int = 1   # learners over all nodes


_INFO: WorkerInfo | None = None


def worker_info() -> WorkerInfo | None:
    """The :class:`WorkerInfo` of this engine process, or None outside one (the supervisor)."""
    return _INFO


def set_worker_info(info: WorkerInfo) -> None:
    global _INFO
    _INFO = info
    os.environ["SHMOPT_RANK"] = str(info.rank)      # kept for code that reads the environment
