"""Per-batch data augmentation, run in the worker on each sampled mini-batch.

A problem's ``augment(batch, generator) -> batch`` gets the sampled tensors (inputs first) and the
worker's own ``torch.Generator`` (seeded with seed + rank, so a run is reproducible and workers
draw different transforms). It must return tensors of the same shapes and dtypes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["crop_flip"]


def crop_flip(batch: tuple[Tensor, ...], generator: torch.Generator, pad: int = 4) -> tuple[Tensor, ...]:
    """Random crops of ``pad``-padded (zeros) images back to their size, and horizontal flips
    with probability 1/2 (the standard CIFAR-10 augmentation), per sample, in one gather."""
    x, *rest = batch
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B, 1), generator=generator)
    flip = torch.rand(B, 1, generator=generator) < 0.5
    rows = dy + torch.arange(H)                                   # (B, H) source rows
    cols = dx + torch.arange(W)                                   # (B, W) source columns
    cols = torch.where(flip, cols.flip(1), cols)
    out = padded[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return (out, *rest)
