"""Problems that misbehave inside workers only (the supervisor's validation passes)."""
from __future__ import annotations

import functools
import multiprocessing
import os
import time

import torch
from torch import nn

from shmopt.problems import Problem


def _model() -> nn.Module:
    return nn.Linear(4, 1)


def _in_worker() -> bool:
    return multiprocessing.parent_process() is not None


_EVAL_CALLS: dict[int, int] = {}


def _loss(model: nn.Module, batch, mode: str, after: int, count_dir: str | None = None) -> torch.Tensor:
    x, y = batch
    if count_dir and _in_worker():               # count this process's loss() calls, independently
        _loss.counted = getattr(_loss, "counted", 0) + 1
        with open(os.path.join(count_dir, f"{os.getpid()}.calls"), "w") as f:
            f.write(str(_loss.counted))
    if not _in_worker() and mode == "slow-eval" and torch.is_grad_enabled() is False:
        time.sleep(after)                          # the supervisor's evaluations take `after` s
    if not _in_worker() and mode == "eval":      # the supervisor: validation, then evaluations
        calls = _EVAL_CALLS[after] = _EVAL_CALLS.get(after, 0) + 1   # one count per test setting
        if calls > after:
            raise ZeroDivisionError("boom in the evaluation")
    if _in_worker():
        _loss.calls = getattr(_loss, "calls", 0) + 1
        if mode == "all-nan" and _loss.calls > after:   # every worker diverges
            return (model(x).squeeze(-1) - y).pow(2).mean() * float("inf") * 0.0
        if _loss.calls > after and os.environ.get("SHMOPT_RANK") == "0":
            if mode == "raise":
                raise ValueError("boom from the test problem")
            if mode == "long":                   # a traceback far larger than a pipe buffer
                raise ValueError("boom " + "x" * 300_000)
            if mode == "nan":
                return (model(x).squeeze(-1) - y).pow(2).mean() * float("nan")
            if mode == "hang":
                time.sleep(3600)
    return 0.5 * (model(x).squeeze(-1) - y).pow(2).mean()


def problem(mode: str = "raise", after: int = 5, count_dir: str | None = None) -> Problem:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return Problem("faulty", _model, functools.partial(_loss, mode=mode, after=after, count_dir=count_dir), (x, y),
                   batch_size=16, lr={"sgd": 0.05, "amsgrad": 0.01})
