"""A worker's private memory does not grow with a sparse table (issue #23): the private gradient
buffer covers the dense parameters only, a step moves the indexed rows only (every other row
and its state bit-identical), and a spawned worker that attaches and steps never touches or
allocates anything of the table's size (its peak resident memory, measured by the kernel).
Every child is joined with a timeout."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import run_children
from torch import nn

from shmopt.errors import ConfigError
from shmopt.shared import (
    SharedAdam,
    SharedRowwiseAMSGrad,
    SharedSGD,
    SharedSparseAdam,
    pull_parameters,
    push_gradients,
    share,
)

ROWS, DIM = 10**6, 16
TABLE_BYTES = ROWS * DIM * 4                          # 64 MB
IDX = torch.tensor([5, 999_999, 5, 123_456, 7, 5])  # row 5 three times
JOIN_S = 60


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(ROWS, DIM, sparse=True)
        self.head = nn.Linear(DIM, 2)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(idx)).pow(2).mean()


class OwnTable(nn.Module):
    """A module of one's own whose weight gets a sparse gradient: share() cannot guess it."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(50, DIM))
        self.head = nn.Linear(DIM, 1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(F.embedding(idx, self.table, sparse=True)).sum()


def test_private_gradient_buffer_covers_the_dense_parameters_only():
    with share(Model()) as shared:
        dense = sum(p.numel() for p in shared.head.parameters())
        assert shared.sparse_params == (0,) and shared.flat_grad.numel() == dense == 2 * DIM + 2
        shared.zero_grad()
        assert shared.emb.weight.grad is None                             # nothing of the table's size
        assert shared.head.weight.grad.data_ptr() == shared.flat_grad.data_ptr()
        assert shared.grad_buffer(0) is None and shared.grad_buffer(2).shape == (2,)
        shared(IDX).backward()
        assert shared.emb.weight.grad.is_sparse and shared.head.weight.grad.abs().sum() > 0
        blob = pickle.dumps(shared)
        assert len(blob) < 20_000                                         # by handle, not data
        assert pickle.loads(blob) is shared


def test_sparse_params_declares_a_table_of_ones_own_module():
    with share(OwnTable(), sparse_params=["table"]) as shared:
        assert shared.sparse_params == (0,) and shared.flat_grad.numel() == DIM + 1
        assert share(shared.module, sparse_params=[shared.table]) is shared
        local = OwnTable()
        pull_parameters(local, shared)
        local(torch.tensor([3, 3, 9])).backward()
        push_gradients(local, shared)
        g = shared.table.grad
        assert g.is_sparse and g.is_coalesced() and g._indices()[0].tolist() == [3, 9]
        local(torch.tensor([9])).backward()
        push_gradients(local, shared, accumulate=True)                  # added sparsely
        assert shared.table.grad.is_sparse and shared.table.grad._indices()[0].tolist() == [3, 9]
        with SharedSGD(shared.parameters(), lr=0.1) as opt:
            before = shared.table.detach().clone()
            opt.step()
            moved = (shared.table != before).any(1)
            assert moved.nonzero().view(-1).tolist() == [3, 9]
        with pytest.raises(ConfigError, match="shared already, without parameters \\[1\\]"):
            share(shared.module, sparse_params=["head.weight"])
    with share(OwnTable()) as plain:                                    # undeclared: a dense slot
        assert plain.sparse_params == () and plain.flat_grad.numel() == 50 * DIM + DIM + 1


def test_a_dense_local_gradient_of_a_table_is_taken_as_is():
    with share(OwnTable(), sparse_params=["table"]) as shared:
        local = OwnTable()
        local.table.grad = torch.ones(50, DIM)                           # e.g. a tied weight
        g = local.table.grad
        push_gradients(local, shared)
        assert shared.table.grad is g and local.table.grad is None       # consumed: no copy
        local.table.grad = torch.ones(50, DIM)
        push_gradients(local, shared, consume=False)
        assert shared.table.grad is not local.table.grad                 # kept: a private copy


@pytest.mark.parametrize("bad,match", [
    (["nope"], r"sparse_params names 'nope', which is not a parameter"),
    ([torch.zeros(3)], r"sparse_params names a tensor of shape \(3,\), which is not a parameter"),
])
def test_bad_sparse_params_are_one_config_error_line(bad, match):
    model = OwnTable()
    with pytest.raises(ConfigError, match=match) as e:
        share(model, sparse_params=bad)
    assert "\n" not in str(e.value)
    assert all(not p.is_shared() for p in model.parameters())           # refused before any arena


OPTIMIZERS = {
    "sgd": lambda ps: SharedSGD(ps, lr=0.5),
    "lazy-amsgrad": lambda ps: SharedSparseAdam(ps, lr=0.01, amsgrad=True),
    "rowwise-amsgrad": lambda ps: SharedRowwiseAMSGrad(ps, lr=0.01),
}


@pytest.mark.parametrize("flow", ["shared-forward", "push"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_step_moves_the_indexed_rows_only(name, flow):
    model = Model()
    with share(model) as shared, OPTIMIZERS[name](shared.emb.parameters()) as opt, \
            SharedAdam(shared.head.parameters(), lr=0.01) as head_opt:
        w = shared.emb.weight
        before = w.detach().clone()
        local = Model() if flow == "push" else None
        for _ in range(3):
            if local is not None:
                pull_parameters(local, shared)
                local(IDX).backward()
                push_gradients(local, shared)
            else:
                opt.zero_grad()
                head_opt.zero_grad()
                shared(IDX).backward()
            assert w.grad.is_sparse
            opt.step()
            head_opt.step()
        untouched = torch.ones(ROWS, dtype=torch.bool)
        untouched[IDX] = False
        assert torch.equal(w[untouched], before[untouched])             # bit-identical
        assert (w[IDX] != before[IDX]).any(1).all()
        for key, state in opt.state[w].items():
            assert not state[untouched].any(), f"state {key} of an untouched row changed"
        assert opt.step_count == head_opt.step_count == 3


# ------------------------------------------------------------------ a spawned worker's peak
def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def _warm_up() -> None:
    """The same kinds of step on a tiny private model: torch's first optimizer imports some 800
    modules (about 70 MB) and first kernel calls allocate too, whatever the table's size."""
    tiny = nn.Sequential(nn.Embedding(8, DIM, sparse=True), nn.Linear(DIM, 2))
    with SharedSparseAdam(tiny[0].parameters(), amsgrad=True) as a, SharedAdam(tiny[1].parameters()) as b:
        for _ in range(2):
            a.zero_grad()
            b.zero_grad()
            tiny(IDX % 8).pow(2).mean().backward()
            a.step()
            b.step()


def _worker(inbox, outbox) -> None:
    torch.set_num_threads(1)
    _warm_up()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                    # the peak (VmHWM) restarts from now
    rss = _status("VmRSS")
    shared, opt, head_opt = inbox.get(timeout=JOIN_S)   # attaches by handle
    for t in range(5):
        opt.zero_grad()
        head_opt.zero_grad()
        shared((IDX + 7 * t) % ROWS).backward()
        opt.step()
        head_opt.step()
    outbox.put((_status("VmHWM") - rss, shared.flat_grad.numel(), opt.step_count))


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak(), reason="needs Linux /proc/self/clear_refs (peak RSS reset)")
@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("name", ["lazy-amsgrad"])   # the most state; the others share the path
def test_a_spawned_worker_never_holds_anything_of_the_tables_size(name):
    ctx = mp.get_context("spawn")
    with share(Model()) as shared, OPTIMIZERS[name](shared.emb.parameters()) as opt, \
            SharedAdam(shared.head.parameters(), lr=0.01) as head_opt:
        inbox = ctx.Queue()
        inbox.put((shared, opt, head_opt))          # read (attached) after the peak is reset
        ((growth, grad_numel, count),) = run_children(ctx, _worker, [(inbox,)], JOIN_S)
        # the table is 64 MB of shared memory (its element-wise state too): a private copy of
        # it, or a walk over all its pages, would add 64 MB to the worker's peak
        assert growth < TABLE_BYTES // 4, f"peak grew by {growth >> 20} MB"
        assert grad_numel == 2 * DIM + 2 and count == opt.step_count == 5
