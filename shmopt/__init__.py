"""shmopt: a shared-memory, multi-process, Hogwild-style training engine for PyTorch.

Parameters and optimizer state live in shared memory; worker processes update them lock-free
(APAM, Hogwild) or through one applier (sync and K-of-P variants).

>>> import shmopt
>>> result = shmopt.train("logreg", algo="apam", workers=2, steps=2000)   # doctest: +SKIP
"""
__version__ = "0.1.0"

from . import weights
from .api import Result, train
from .config import Config
from .engine.record import Sample
from .engine.supervisor import Engine
from .errors import ConfigError, ProblemError, ShmoptError, ShmSpaceError, WorkerError
from .launch import Launched, launch
from .problems import Problem, load_problem
from .problems.streams import shard_stream
from .problems.worker_info import WorkerInfo, worker_info
from .shared import (
    GlobalStepLR,
    SharedAdagrad,
    SharedAdam,
    SharedAMSGrad,
    SharedModel,
    SharedRowwiseAdagrad,
    SharedRowwiseAMSGrad,
    SharedSGD,
    SharedSparseAdam,
    pull_parameters,
    push_gradients,
    share,
)

__all__ = ["__version__", "train", "Result", "Config", "Engine", "Sample", "Problem",
           "load_problem", "ShmoptError", "ConfigError", "ProblemError", "ShmSpaceError",
           "WorkerError", "SharedAdam", "SharedAMSGrad", "SharedSGD", "SharedAdagrad", "SharedSparseAdam",
           "SharedRowwiseAdagrad", "SharedRowwiseAMSGrad", "SharedModel", "share",
           "push_gradients", "pull_parameters", "GlobalStepLR", "worker_info", "WorkerInfo",
           "shard_stream", "launch", "Launched", "weights"]
