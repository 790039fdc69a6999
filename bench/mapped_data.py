"""Problems for bench/test_data_sources.py: uint8 image rows in a ``.npy`` file, trained mapped (every
worker reads the file through the page cache) or in memory (read whole, copied into the arena);
and a map-style dataset of a million cheap items (read per batch, or up front)."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shmopt.problems import Problem

DIM, CLASSES = 3072, 10          # a 32x32x3 uint8 image per row
CHUNK = 1 << 16


def make_file(path: str, nbytes: int, seed: int = 0) -> int:
    """A uint8 ``.npy`` of rows of DIM bytes (about ``nbytes``); the row count."""
    rows = nbytes // DIM
    if os.path.exists(path) and np.load(path, mmap_mode="r").shape == (rows, DIM):
        return rows
    out = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.uint8, shape=(rows, DIM))
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, (CHUNK, DIM), dtype=np.uint8)
    for start in range(0, rows, CHUNK):
        stop = min(start + CHUNK, rows)
        out[start:stop] = block[:stop - start]
    out.flush()
    del out
    os.replace(path + ".part", path)
    return rows


def _model() -> nn.Module:
    return nn.Linear(DIM, CLASSES)


def _loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x / 255.0), y)


def images(path: str, mapped: bool = True, batch_size: int = 64) -> Problem:
    x = np.load(path, mmap_mode="c") if mapped else np.load(path)
    y = torch.from_numpy(x[:, 0].astype(np.int64) % CLASSES)          # labels: a function of the row
    return Problem("images", _model, _loss, (torch.from_numpy(x), y), batch_size=batch_size,
                   lr={"sgd": 0.01})


class Cheap(torch.utils.data.Dataset):
    """Item i: 32 floats and a label, computed from i (no file: the cost is the reads' own)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((32,), (i % 97) / 97.0), i % CLASSES


def _small_model() -> nn.Module:
    return nn.Linear(32, CLASSES)


def _ce(model: nn.Module, batch) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def cheap(n: int, eager: bool | None) -> Problem:
    return Problem("cheap", _small_model, _ce, Cheap(n), batch_size=64, lr={"sgd": 0.05}, eager=eager)
