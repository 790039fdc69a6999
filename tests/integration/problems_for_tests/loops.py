"""Users' own training loops for shmopt.launch (module level: spawn sends them by reference)."""
from __future__ import annotations

import os
import signal
import time

import torch


def data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0])


def loss_of(model, x, y) -> torch.Tensor:
    return (model(x).squeeze(-1) - y).pow(2).mean()


def hogwild(rank: int, model, optimizer, steps: int, batch: int = 32) -> None:
    """The mnist_hogwild loop: the shared model, a mini-batch, backward, the shared optimizer's step."""
    x, y = data()
    g = torch.Generator().manual_seed(rank)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g)
        optimizer.zero_grad()
        loss_of(model, x[idx], y[idx]).backward()
        optimizer.step()


def fails(rank: int, model, optimizer, how: str) -> None:
    if rank == 1:
        if how == "raise":
            raise ValueError("boom from the user's loop")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)                      # the others would run on: the supervisor stops them


def forever(rank: int, model, optimizer, marker: str) -> None:
    """Train until stopped; rank 0 touches ``marker`` once it has stepped."""
    x, y = data()
    while True:
        optimizer.zero_grad()
        loss_of(model, x[:32], y[:32]).backward()
        optimizer.step()
        if rank == 0 and not os.path.exists(marker):
            open(marker, "w").close()
