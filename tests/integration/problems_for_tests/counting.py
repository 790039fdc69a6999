"""A problem whose loss writes the row numbers of every mini-batch a worker trains on (one file per
worker process in ``out_dir``), so a test can count how often each row was seen. ``source`` picks
where the rows come from: ``tensor`` (in memory), ``memmap`` (a uint8 ``.npy`` file mapped by
every worker), ``dataset`` (a map-style dataset read per batch) or ``stream`` (an IterableDataset
each worker reads its share of, through a DataLoader of ``loader_workers`` processes if > 0)."""
from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import nn

import shmopt
from shmopt.problems import Problem

D = 4


def _model() -> nn.Module:
    return nn.Linear(D, 1)


def _loss(model: nn.Module, batch, out_dir: str) -> torch.Tensor:
    x, ids = batch
    info = shmopt.worker_info()
    if info is not None:
        with open(os.path.join(out_dir, f"{info.rank}-{os.getpid()}.ids"), "ab") as f:
            f.write(ids.numpy().astype(np.int64).tobytes())
    return model(x / 255.0).pow(2).mean()


class Rows(torch.utils.data.Dataset):
    """Row i: (D values i mod 256, i)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((D,), i % 256, dtype=torch.uint8), i


def problem(out_dir: str = ".", n: int = 400, batch_size: int = 10, source: str = "tensor",
            path: str | None = None, loader_workers: int = 0) -> Problem:
    ids = torch.arange(n)
    x = (ids % 256).to(torch.uint8)[:, None].expand(n, D).contiguous()
    loss = functools.partial(_loss, out_dir=out_dir)
    if source == "stream":
        return Problem("counting-stream", _model, loss, Stream(n, loader_workers), batch_size=batch_size,
                       lr={"sgd": 0.01})
    if source == "dataset":
        return Problem("counting", _model, loss, Rows(n), batch_size=batch_size, lr={"sgd": 0.01}, eager=False)
    if source == "memmap":
        if path is None:                  # this test's own file, else the one given (-o path=...)
            path = os.path.join(out_dir, "x.npy")
            if not os.path.exists(path):
                np.save(path, x.numpy())
        x = torch.from_numpy(np.load(path, mmap_mode="c"))     # "r" works too (torch warns: read-only)
    return Problem("counting", _model, loss, (x, ids), batch_size=batch_size, lr={"sgd": 0.01})


class Stream(torch.utils.data.IterableDataset):
    """Rows 0..n-1 in order, each learner keeping its share (``shmopt.shard_stream``); with
    ``loader_workers`` > 0 the rows come through a torch DataLoader with that many processes."""

    def __init__(self, n: int, loader_workers: int = 0) -> None:
        self.n, self.loader_workers = n, loader_workers

    def __iter__(self):
        mine = shmopt.shard_stream(range(self.n))
        if self.loader_workers:
            rows = list(mine)
            loader = torch.utils.data.DataLoader(Rows(self.n), batch_size=None, num_workers=self.loader_workers,
                                                 sampler=rows)
            return iter(loader)
        return (Rows(self.n)[i] for i in mine)

