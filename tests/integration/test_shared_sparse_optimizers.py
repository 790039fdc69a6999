"""Tests of the shared optimizers with sparse gradients (nn.Embedding(sparse=True)): parity with
torch.optim step for step with duplicate indices, gradients kept sparse by push_gradients,
torch's state_dict format, one-line refusals, and the shared state and exact step count across
spawned processes.  Every child is joined with a timeout."""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from helpers import run_children
from torch import nn

from shmopt.errors import ConfigError
from shmopt.shared import (
    SharedAdagrad,
    SharedAdam,
    SharedRowwiseAdagrad,
    SharedSGD,
    SharedSparseAdam,
    pull_parameters,
    push_gradients,
    share,
)

TIGHT = {"rtol": 1e-6, "atol": 1e-7}
JOIN_S = 60
ROWS, DIM = 30, 4


class Net(nn.Module):
    def __init__(self, dense: bool = True, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(ROWS, DIM, sparse=True)
        self.lin = nn.Linear(DIM, 2) if dense else None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx)
        return (self.lin(h) if self.lin is not None else h).pow(2).mean()


def _idx(t: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(t)
    idx = torch.randint(0, 20, (9,), generator=gen)
    idx[4] = idx[0]                                       # a duplicate in every batch
    return idx


CASES = [
    ("sgd", lambda ps: SharedSGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=False), True),
    ("adagrad", lambda ps: SharedAdagrad(ps, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
     lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, foreach=False),
     True),
    ("sparse-adam", lambda ps: SharedSparseAdam(ps, lr=0.01, betas=(0.8, 0.99)),
     lambda ps: torch.optim.SparseAdam(ps, lr=0.01, betas=(0.8, 0.99)), False),
]


@pytest.mark.parametrize("how", ["push", "step"])
@pytest.mark.parametrize("name,ours,theirs,dense", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_step_for_step_with_sparse_and_dense_gradients(name, ours, theirs, dense, how):
    model, local, ref = Net(dense), Net(dense), Net(dense)
    with share(model) as shared:
        opt, topt = ours(model.parameters()), theirs(ref.parameters())
        try:
            for t in range(15):
                topt.zero_grad()
                ref(_idx(t)).backward()
                topt.step()
                if how == "push":
                    pull_parameters(local, shared)
                    local(_idx(t)).backward()
                    push_gradients(local, shared)
                    g = model.emb.weight.grad
                    assert g.is_sparse and g.is_coalesced() and g._nnz() == _idx(t).unique().numel()
                    assert shared.flat_grad.numel() == (2 * DIM + 2 if dense else 0)   # no table slot
                else:
                    opt.zero_grad()
                    model(_idx(t)).backward()
                opt.step()
                for a, b in zip(model.parameters(), ref.parameters()):
                    torch.testing.assert_close(a, b, **TIGHT)
            for p, q in zip(model.parameters(), ref.parameters()):
                for k, v in topt.state[q].items():
                    if k != "step":
                        torch.testing.assert_close(opt.state[p][k], v, **TIGHT)
            assert opt.step_count == 15
            assert model.emb.weight[20:].equal(ref.emb.weight[20:])       # never touched rows
        finally:
            opt.close()


def test_rowwise_adagrad_follows_its_equations_dense_and_sparse():
    model, ref = Net(), Net()
    with share(model), SharedRowwiseAdagrad(model.parameters(), lr=0.1, eps=1e-6) as opt:
        sums = {n: torch.zeros(p.shape[0] if p.dim() else 1) for n, p in ref.named_parameters()}
        for t in range(10):
            opt.zero_grad()
            model(_idx(t)).backward()
            opt.step()
            ref.zero_grad()
            ref(_idx(t)).backward()
            with torch.no_grad():
                for n, p in ref.named_parameters():
                    g = p.grad.coalesce() if p.grad.is_sparse else p.grad
                    rows = g._indices()[0] if g.is_sparse else torch.arange(p.shape[0])
                    vals = (g._values() if g.is_sparse else g).reshape(rows.numel(), -1)
                    sums[n][rows] += vals.pow(2).mean(1)
                    p.view(p.shape[0], -1)[rows] -= 0.1 * vals / (sums[n][rows].sqrt() + 1e-6)[:, None]
        for (n, p), q in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, **TIGHT)
            torch.testing.assert_close(opt.state[p]["sum"], sums[n], **TIGHT)
        sd = opt.state_dict()
        assert sd["state"][0]["sum"].shape == (ROWS,) and int(sd["state"][0]["step"]) == 10
        opt.load_state_dict(sd)                                  # round trip, in place
        torch.testing.assert_close(opt.state[model.emb.weight]["sum"], sums["emb.weight"], **TIGHT)


def test_adagrad_state_dict_loads_into_torch_and_back():
    model, ref = Net(), Net()
    with share(model), SharedAdagrad(model.parameters(), lr=0.1) as opt:
        for t in range(3):
            opt.zero_grad()
            model(_idx(t)).backward()
            opt.step()
        topt = torch.optim.Adagrad(ref.parameters(), lr=0.1)
        topt.load_state_dict(opt.state_dict())
        torch.testing.assert_close(topt.state[ref.emb.weight]["sum"], opt.state[model.emb.weight]["sum"])
        opt.load_state_dict(torch.optim.Adagrad(ref.parameters(), lr=0.1).state_dict())
        assert opt.step_count == 0 and not opt.state[model.emb.weight]["sum"].any()


@pytest.mark.parametrize("make,grad_kind,match", [
    (lambda ps: SharedAdam(ps), "sparse", "SharedAdam does not support sparse gradients"),
    (lambda ps: SharedSGD(ps, lr=0.1, momentum=0.9), "sparse", "momentum=0.9 with sparse gradients"),
    (lambda ps: SharedAdagrad(ps, weight_decay=0.1), "sparse", "weight_decay=0.1 with sparse gradients"),
    (lambda ps: SharedSparseAdam(ps), "dense", "SharedSparseAdam does not support dense gradients"),
])
def test_refusals_are_one_line(make, grad_kind, match):
    model = Net(dense=grad_kind == "dense")
    if grad_kind == "dense":
        model.emb.sparse = False
    with make(model.parameters()) as opt:
        model(_idx(0)).backward()
        with pytest.raises(ConfigError, match=match) as e:
            opt.step()
        assert "\n" not in str(e.value) and str(e.value).startswith("param group 0: ")


def test_push_gradients_accumulates_sparse_gradients_sparsely():
    model, local = Net(), Net()
    with share(model) as shared:
        for t in range(2):
            local(_idx(t)).backward()
            push_gradients(local, shared, accumulate=t > 0)
        g = model.emb.weight.grad
        ref = Net()
        for t in range(2):
            ref(_idx(t)).backward()
        assert g.is_sparse and g.is_coalesced()
        torch.testing.assert_close(g.to_dense(), ref.emb.weight.grad.to_dense(), **TIGHT)


# ----------------------------------------------------------------- several real processes
STEPS, CHILDREN = 25, 3


def _rows_of(rank: int) -> torch.Tensor:
    return torch.tensor([3, 3, 3, 0, 1]) + 5 * rank       # row 5r+3 three times: 3 * w each step


def _child(shared, opt_a, opt_b, rank: int, barrier, q) -> None:
    torch.set_num_threads(1)
    local = TwoTables()
    for _ in range(STEPS):
        pull_parameters(local, shared)
        local(_rows_of(rank)).backward()
        push_gradients(local, shared)
        opt_a.step()
        opt_b.step()
    barrier.wait(timeout=JOIN_S)
    q.put((rank, opt_a.process_steps, opt_a.step_count, opt_b.step_count,
           float(opt_a.state[shared.a.weight]["sum"].double().sum()),
           float(opt_b.state[shared.b.weight]["sum"].double().sum())))


class TwoTables(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Embedding(5 * CHILDREN + 5, DIM, sparse=True)
        self.b = nn.Embedding(5 * CHILDREN + 5, DIM, sparse=True)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        w = torch.arange(1.0, DIM + 1)
        return ((self.a(idx) + self.b(idx)) * w).sum()          # gradient of a row: count * w


@pytest.mark.timeout_s(120)
def test_spawned_processes_share_sparse_adagrad_state_and_an_exact_count():
    ctx = mp.get_context("spawn")
    with share(TwoTables()) as shared, SharedAdagrad(shared.a.parameters(), lr=0.01) as opt_a, \
            SharedRowwiseAdagrad(shared.b.parameters(), lr=0.01) as opt_b:
        before = shared.flat.clone()
        barrier = ctx.Barrier(CHILDREN)
        results = run_children(ctx, _child, [(shared, opt_a, opt_b, r, barrier) for r in range(CHILDREN)],
                               JOIN_S)
        total = CHILDREN * STEPS
        assert opt_a.step_count == opt_b.step_count == total               # exact: none lost
        assert all(r[1] == STEPS and r[2] == r[3] == total for r in results)
        # each process owns its rows, so the shared accumulators are exact: STEPS * (count * w)^2
        w = torch.arange(1.0, DIM + 1)
        sum_a, sum_b = opt_a.state[shared.a.weight]["sum"], opt_b.state[shared.b.weight]["sum"]
        for r in range(CHILDREN):
            for row, count in ((5 * r + 3, 3), (5 * r, 1)):
                torch.testing.assert_close(sum_a[row], STEPS * (count * w) ** 2)
                torch.testing.assert_close(sum_b[row], STEPS * ((count * w) ** 2).mean())
        assert not sum_a[5 * CHILDREN:].any() and not sum_b[5 * CHILDREN:].any()   # untouched rows
        assert {r[4] for r in results} == {float(sum_a.double().sum())}            # what the parent sees
        assert {r[5] for r in results} == {float(sum_b.double().sum())}
        n = shared.a.weight.numel()
        moved = (shared.flat != before).view(2, -1, DIM).any(-1)
        touched = torch.tensor([5 * r + k for r in range(CHILDREN) for k in (0, 1, 3)])
        assert moved[:, touched].all() and moved.sum() == 2 * touched.numel()
        assert shared.flat.numel() == 2 * n
