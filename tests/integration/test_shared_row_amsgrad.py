"""Tests of the shared lazy AMSGrad (SharedSparseAdam(amsgrad=True)) and row-wise AMSGrad
(SharedRowwiseAMSGrad): step for step against a reference written from the equations of
shmopt.rules.row_adam (in float64, duplicate indices in every batch, sparse and dense
gradients), torch's state_dict format, one-line refusals, and the shared state and exact step
count across two spawned processes.  Every child is joined with a timeout."""
from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
from helpers import run_children
from torch import nn

from shmopt.errors import ConfigError
from shmopt.shared import SharedRowwiseAMSGrad, SharedSparseAdam, pull_parameters, push_gradients, share

ROWS, DIM, STEPS = 30, 4, 12
JOIN_S = 60


class Net(nn.Module):
    def __init__(self, dense: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(ROWS, DIM, sparse=True)
        self.lin = nn.Linear(DIM, 2) if dense else None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx) * (1 + idx % 3)[:, None]           # rows get gradients of unlike sizes
        return (self.lin(h) if self.lin is not None else h).pow(2).mean()


def _idx(t: int) -> torch.Tensor:
    idx = torch.randint(0, 20, (9,), generator=torch.Generator().manual_seed(t))
    idx[4] = idx[7] = idx[0]                              # a row three times in every batch
    return idx


def _reference(net: Net, kind: str, lr: float, betas, eps: float, bias_correction: bool):
    """The equations of shmopt.rules.row_adam, one distinct touched row at a time, float64 state;
    a dense gradient touches every row.  Returns each parameter's state after STEPS steps."""
    b1, b2 = betas
    tables = {n: p.view(p.shape[0] if p.dim() else 1, -1) for n, p in net.named_parameters()}
    shape = {n: (w.shape if kind == "lazy" else w.shape[:1]) for n, w in tables.items()}
    state = {n: {"exp_avg": torch.zeros(w.shape, dtype=torch.float64),
                 "exp_avg_sq": torch.zeros(shape[n], dtype=torch.float64),
                 "max_exp_avg_sq": torch.zeros(shape[n], dtype=torch.float64)} for n, w in tables.items()}
    for t in range(1, STEPS + 1):
        net.zero_grad()
        net(_idx(t)).backward()
        c = lr * math.sqrt(1 - b2**t) / (1 - b1**t) if bias_correction else lr
        with torch.no_grad():
            for n, p in net.named_parameters():
                g = p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad
                g = g.double().view_as(tables[n])
                rows = g.abs().sum(1).nonzero().view(-1) if p.grad.is_sparse else range(g.shape[0])
                m, v, vhat = (state[n][k] for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
                for i in rows:
                    m[i] = b1 * m[i] + (1 - b1) * g[i]
                    v[i] = b2 * v[i] + (1 - b2) * (g[i] ** 2 if kind == "lazy" else (g[i] ** 2).mean())
                    vhat[i] = torch.maximum(vhat[i], v[i])
                    tables[n][i] -= (c * m[i] / (vhat[i].sqrt() + eps)).float()
    return state


CASES = [  # (id, kind, make, hyper-parameters, dense head)
    ("lazy-amsgrad", "lazy", SharedSparseAdam, dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, amsgrad=True), False),
    ("lazy-amsgrad-apam", "lazy", SharedSparseAdam,
     dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, amsgrad=True, bias_correction=False), False),
    ("rowwise", "rowwise", SharedRowwiseAMSGrad, dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6), True),
    ("rowwise-no-m", "rowwise", SharedRowwiseAMSGrad,
     dict(lr=0.01, betas=(0.0, 0.9), eps=1e-6, bias_correction=False), True),
]


@pytest.mark.parametrize("how", ["push", "step"])
@pytest.mark.parametrize("name,kind,make,hp,dense", CASES, ids=[c[0] for c in CASES])
def test_follows_the_equations_step_for_step(name, kind, make, hp, dense, how):
    model, local, ref = Net(dense), Net(dense), Net(dense)
    with share(model) as shared, make(model.parameters(), **hp) as opt:
        for t in range(1, STEPS + 1):
            if how == "push":
                pull_parameters(local, shared)
                local(_idx(t)).backward()
                push_gradients(local, shared)
            else:
                opt.zero_grad()
                model(_idx(t)).backward()
            opt.step()
        state = _reference(ref, kind, hp["lr"], hp["betas"], hp["eps"], hp.get("bias_correction", True))
        for (n, p), q in zip(model.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
            for k, v in opt.state[p].items():
                torch.testing.assert_close(v.double().view_as(state[n][k]), state[n][k], rtol=1e-5, atol=1e-7)
        vmax, v = (opt.state[model.emb.weight][k] for k in ("max_exp_avg_sq", "exp_avg_sq"))
        assert (vmax > v).any() and (vmax >= v).all()           # the max is exercised
        assert ("exp_avg" in opt.state[model.emb.weight]) is (hp["betas"][0] > 0)
        assert model.emb.weight[20:].equal(ref.emb.weight[20:])   # never touched rows
        assert opt.step_count == STEPS


def test_state_dict_has_torchs_keys_and_loads_back_in_place():
    model = Net(False)
    with share(model), SharedSparseAdam(model.parameters(), amsgrad=True) as lazy, \
            SharedRowwiseAMSGrad(model.parameters()) as rowwise:
        for t in range(3):
            model(_idx(t)).backward()
            lazy.step()
            rowwise.step()
            model.zero_grad()
        for opt, shape in ((lazy, (ROWS, DIM)), (rowwise, (ROWS,))):
            sd = opt.state_dict()
            st = sd["state"][0]
            assert st.keys() == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"} and int(st["step"]) == 3
            assert st["exp_avg_sq"].shape == st["max_exp_avg_sq"].shape == shape
            ptr = opt.state[model.emb.weight]["max_exp_avg_sq"].data_ptr()
            st["max_exp_avg_sq"].fill_(2.0)
            opt.load_state_dict(sd)
            assert opt.state[model.emb.weight]["max_exp_avg_sq"].data_ptr() == ptr
            assert (opt.state[model.emb.weight]["max_exp_avg_sq"] == 2.0).all() and opt.step_count == 3
        assert sd["param_groups"][0]["bias_correction"] is True


@pytest.mark.parametrize("make,grad_kind,match", [
    (lambda ps: SharedSparseAdam(ps, amsgrad=True), "dense", "SharedSparseAdam does not support dense"),
    (lambda ps: SharedSparseAdam([{"params": ps, "amsgrad": False}], amsgrad=True), None,
     "amsgrad cannot differ between param groups"),
    (lambda ps: SharedSparseAdam(ps, amsgrad=1), None, "invalid amsgrad=1"),
    (lambda ps: SharedRowwiseAMSGrad([{"params": ps, "weight_decay": 0.1}]), None, "invalid weight_decay=0.1"),
    (lambda ps: SharedRowwiseAMSGrad(ps, betas=(0.9, 1.0)), None, r"invalid betas\[1\]=1.0"),
])
def test_refusals_are_one_line(make, grad_kind, match):
    model = Net(False)
    model.emb.sparse = grad_kind != "dense"
    with pytest.raises(ConfigError, match=match) as e:
        with make(model.parameters()) as opt:
            model(_idx(0)).backward()
            opt.step()
    assert "\n" not in str(e.value) and str(e.value).startswith("param group 0: ")


# ----------------------------------------------------------------- two real processes
CHILDREN, CHILD_STEPS, BETAS = 2, 20, (0.8, 0.9)


class TwoTables(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Embedding(5 * CHILDREN + 5, DIM, sparse=True)
        self.b = nn.Embedding(5 * CHILDREN + 5, DIM, sparse=True)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        w = torch.arange(1.0, DIM + 1)
        return ((self.a(idx) + self.b(idx)) * w).sum()          # gradient of a row: count * w


def _rows_of(rank: int) -> torch.Tensor:
    return torch.tensor([3, 3, 3, 0, 1]) + 5 * rank       # each process owns its rows


def _child(shared, lazy, rowwise, rank: int, barrier, q) -> None:
    torch.set_num_threads(1)
    for _ in range(CHILD_STEPS):
        shared.zero_grad()
        shared(_rows_of(rank)).backward()                  # on the shared tables: sparse, private
        lazy.step()
        rowwise.step()
    barrier.wait(timeout=JOIN_S)
    q.put((lazy.process_steps, rowwise.process_steps, lazy.step_count, rowwise.step_count,
           shared.flat_grad.numel()))


@pytest.mark.timeout_s(120)
def test_two_spawned_processes_share_the_state_and_an_exact_count():
    ctx = mp.get_context("spawn")
    with share(TwoTables()) as shared, \
            SharedSparseAdam(shared.a.parameters(), lr=0.01, betas=BETAS, amsgrad=True) as lazy, \
            SharedRowwiseAMSGrad(shared.b.parameters(), lr=0.01, betas=BETAS) as rowwise:
        barrier = ctx.Barrier(CHILDREN)
        results = run_children(ctx, _child, [(shared, lazy, rowwise, r, barrier) for r in range(CHILDREN)],
                               JOIN_S)
        total = CHILDREN * CHILD_STEPS
        assert lazy.step_count == rowwise.step_count == total                       # none lost
        assert results == [(CHILD_STEPS, CHILD_STEPS, total, total, 0)] * CHILDREN
        # a constant gradient G from zero state: m = (1-b1^S) G, v = vhat = (1-b2^S) G^2
        w, (b1, b2), n = torch.arange(1.0, DIM + 1), BETAS, CHILD_STEPS
        sa, sb = lazy.state[shared.a.weight], rowwise.state[shared.b.weight]
        for r in range(CHILDREN):
            for row, count in ((5 * r + 3, 3), (5 * r, 1), (5 * r + 1, 1)):
                g = count * w
                for st in (sa, sb):
                    torch.testing.assert_close(st["exp_avg"][row], (1 - b1**n) * g)
                torch.testing.assert_close(sa["exp_avg_sq"][row], (1 - b2**n) * g**2)
                torch.testing.assert_close(sa["max_exp_avg_sq"][row], (1 - b2**n) * g**2)
                torch.testing.assert_close(sb["exp_avg_sq"][row], (1 - b2**n) * (g**2).mean())
                torch.testing.assert_close(sb["max_exp_avg_sq"][row], (1 - b2**n) * (g**2).mean())
        for st in (sa, sb):                                                        # untouched rows
            assert all(not v[5 * CHILDREN:].any() for v in st.values())
