"""Fake data files for the tests (importable from every test folder: tests/ is on sys.path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shmopt.problems.formats import write_idx


def fake_fashion(folder: Path, n_train: int = 256, n_test: int = 64) -> None:
    """IDX files in Fashion-MNIST's layout whose class is readable: image brightness = label."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = np.clip(y[:, None, None] * 25 + rng.integers(0, 20, (n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(str(folder / f"{prefix}-images-idx3-ubyte.gz"), x)
        write_idx(str(folder / f"{prefix}-labels-idx1-ubyte.gz"), y)
