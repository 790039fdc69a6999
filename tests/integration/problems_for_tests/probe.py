"""A problem whose loss records, once per worker process, what the process sees: worker_info(),
torch threads, CPU affinity and a digest of its first mini-batch (files in ``out_dir``)."""
from __future__ import annotations

import functools
import hashlib
import json
import os

import psutil
import torch
from torch import nn

import shmopt
from shmopt.problems import Problem


def _model() -> nn.Module:
    return nn.Linear(4, 1)


def _loss(model: nn.Module, batch, out_dir: str) -> torch.Tensor:
    x, y = batch
    info = shmopt.worker_info()
    path = os.path.join(out_dir, f"{os.getpid()}.json")
    if info is not None and not os.path.exists(path):
        with open(path, "w") as f:
            json.dump({"rank": info.rank, "workers": info.workers, "group": info.group, "seed": info.seed,
                       "device": info.device, "threads": torch.get_num_threads(),
                       "affinity": sorted(psutil.Process().cpu_affinity()),
                       "first_batch": hashlib.sha256(x.numpy().tobytes()).hexdigest()}, f)
    return 0.5 * (model(x).squeeze(-1) - y).pow(2).mean()


def problem(out_dir: str = ".") -> Problem:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return Problem("probe", _model, functools.partial(_loss, out_dir=out_dir), (x, y), batch_size=16,
                   lr={"sgd": 0.05, "amsgrad": 0.01})
