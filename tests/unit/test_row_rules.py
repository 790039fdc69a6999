"""Tests of the row rules (shmopt.rules.rows and its families): parity with torch.optim's sparse
optimizers (SGD, Adagrad, SparseAdam) and with straightforward references for lazy AMSGrad and
the row-wise rules, step by step with duplicate indices; untouched rows and state never change;
nothing of the table's size is allocated; bad input gives one ConfigError line."""
from __future__ import annotations

import math
import os

import pytest
import torch

from shmopt.errors import ConfigError
from shmopt.rules import (
    LazyAdam,
    RowAdagrad,
    RowRule,
    RowSGD,
    RowwiseAdagrad,
    RowwiseAMSGrad,
    coalesce,
    from_sparse,
)

TIGHT = {"rtol": 1e-6, "atol": 1e-7}
ROWS, DIM, STEPS = 40, 6, 30
UNTOUCHED = torch.arange(30, ROWS)          # the batches never draw these rows


def _batches(steps: int = STEPS, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, 30, (12,), generator=gen)
        idx[3] = idx[7] = idx[0]                     # a row three times in one gradient
        out.append((idx, torch.randn(12, DIM, generator=gen)))
    return out


def _state(rule: RowRule, rows: int = ROWS, dim: int = DIM) -> dict[str, torch.Tensor]:
    state = {k: torch.full(s, 123.0) for k, s in rule.state_specs(rows, dim).items()}
    rule.init(state)
    return state


def _sparse(idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    return torch.sparse_coo_tensor(idx[None], vals, (ROWS, DIM), check_invariants=False)    # uncoalesced, as Embedding's


def _w0() -> torch.Tensor:
    return torch.randn(ROWS, DIM, generator=torch.Generator().manual_seed(1))


def _run_rule(rule: RowRule, batches) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    w, state = _w0(), _state(rule)
    frozen = {k: v[UNTOUCHED].clone() for k, v in state.items()}
    for t, (idx, vals) in enumerate(batches, start=1):
        before = vals.clone()
        rule.update(w, idx, vals, state, t)
        assert torch.equal(vals, before), "update must not modify the gradient"
    torch.testing.assert_close(w[UNTOUCHED], _w0()[UNTOUCHED], rtol=0, atol=0)
    for k, v in frozen.items():
        assert torch.equal(state[k][UNTOUCHED], v), f"state {k} of an untouched row changed"
    return w, state


def _run_torch(make, batches) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    p = torch.nn.Parameter(_w0())
    opt = make([p])
    for idx, vals in batches:
        p.grad = _sparse(idx, vals)
        opt.step()
    return p.detach(), opt.state[p]


# ------------------------------------------------------------------------------ coalesce
def test_coalesce_sums_each_duplicate_once():
    idx = torch.tensor([5, 2, 5, 9, 2, 5])
    vals = torch.arange(12, dtype=torch.float32).view(6, 2)
    uniq, summed = coalesce(idx, vals)
    assert uniq.tolist() == [2, 5, 9]
    dense = torch.zeros(10, 2).index_add_(0, idx, vals)
    torch.testing.assert_close(summed, dense[uniq], rtol=0, atol=0)
    assert float(summed.sum()) == float(vals.sum())                     # nothing lost or doubled


def test_from_sparse_matches_torch_coalesce_and_reshapes_rows():
    idx, vals = _batches(1)[0]
    g = torch.sparse_coo_tensor(idx[None], vals.view(12, 2, 3), (ROWS, 2, 3), check_invariants=False)
    ref = g.coalesce()
    i, v = from_sparse(g)
    assert torch.equal(i, ref._indices()[0]) and v.shape == (i.numel(), DIM)
    torch.testing.assert_close(v, ref._values().reshape(-1, DIM), **TIGHT)
    with pytest.raises(ConfigError, match="sparse_dim=1"):
        from_sparse(torch.eye(3).to_sparse())


def test_update_sparse_coalesces_only_for_rules_that_need_unique_rows():
    idx, vals = _batches(1)[0]
    i, v = from_sparse(_sparse(idx, vals), coalesced=False)
    assert torch.equal(i, idx) and torch.equal(v, vals)                # as stored, duplicates kept
    for rule in (RowSGD(lr=0.1), RowSGD(lr=0.1, weight_decay=0.2), RowAdagrad(lr=0.1), LazyAdam(lr=0.01),
                 RowwiseAMSGrad(lr=0.01)):
        w, state = _run_rule(rule, _batches(3))
        w2, state2 = _w0(), _state(rule)
        for t, (idx, vals) in enumerate(_batches(3), start=1):
            rule.update_sparse(w2, _sparse(idx, vals), state2, t)
        torch.testing.assert_close(w2, w, **TIGHT)
        for k in state:
            torch.testing.assert_close(state2[k], state[k], **TIGHT)


# ------------------------------------------------------------------- parity with torch
TORCH_CASES = [
    ("sgd", RowSGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1), {}),
    ("adagrad", RowAdagrad(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.3, eps=1e-6),
     lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.05, initial_accumulator_value=0.3, eps=1e-6,
                                    foreach=False), {"sum": "sum"}),
    ("sparse-adam", LazyAdam(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
     lambda ps: torch.optim.SparseAdam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6),
     {"m": "exp_avg", "v": "exp_avg_sq"}),
]


@pytest.mark.parametrize("name,rule,make,keys", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_matches_torch_sparse_optimizer_step_for_step(name, rule, make, keys):
    batches = _batches()
    w, state = _run_rule(rule, batches[:1])
    tw, tstate = _run_torch(make, batches[:1])
    torch.testing.assert_close(w, tw, **TIGHT)
    w, state = _run_rule(rule, batches)
    tw, tstate = _run_torch(make, batches)
    torch.testing.assert_close(w, tw, **TIGHT)
    for ours, theirs in keys.items():
        torch.testing.assert_close(state[ours], tstate[theirs], **TIGHT)


def test_row_sgd_weight_decay_acts_once_on_touched_rows_only():
    rule = RowSGD(lr=0.1, weight_decay=0.5)
    w = _w0()
    idx, vals = torch.tensor([3, 3, 7]), torch.ones(3, DIM)
    rule.update(w, idx, vals, {}, 1)
    ref = _w0()
    ref[3] -= 0.1 * (2 + 0.5 * ref[3])
    ref[7] -= 0.1 * (1 + 0.5 * ref[7])
    torch.testing.assert_close(w, ref, **TIGHT)


# ---------------------------------------------------------------- written references
def _ref_rows(kind: str, batches, lr, betas=(0.9, 0.999), eps=1e-8, bias_correction=True,
              acc0=0.0) -> torch.Tensor:
    """Each rule's equations, one distinct row at a time, in float64."""
    w = _w0().double()
    b1, b2 = betas
    m = torch.zeros(ROWS, DIM, dtype=torch.float64)
    v = torch.zeros(ROWS, DIM, dtype=torch.float64)
    vhat = torch.zeros_like(v)
    s = torch.full((ROWS,), acc0, dtype=torch.float64)
    for t, (idx, vals) in enumerate(batches, start=1):
        c = lr * math.sqrt(1 - b2**t) / (1 - b1**t) if bias_correction else lr
        for i in idx.unique().tolist():
            g = vals[idx == i].double().sum(0)
            if kind == "rowwise_adagrad":
                s[i] += (g * g).mean()
                w[i] -= lr * g / (s[i].sqrt() + eps)
                continue
            m[i] = b1 * m[i] + (1 - b1) * g
            if kind == "lazy_amsgrad":
                v[i] = b2 * v[i] + (1 - b2) * g * g
            else:                                       # rowwise_amsgrad: one v per row
                v[i] = b2 * v[i] + (1 - b2) * (g * g).mean()
            vhat[i] = torch.maximum(vhat[i], v[i])
            w[i] -= c * m[i] / (vhat[i].sqrt() + eps)
    return w.float()


REF_CASES = [
    ("lazy-amsgrad", LazyAdam(lr=0.01, amsgrad=True, eps=1e-6), ("lazy_amsgrad", 0.01, (0.9, 0.999), 1e-6)),
    ("lazy-amsgrad-apam", LazyAdam(lr=0.01, amsgrad=True, bias_correction=False, eps=1e-6),
     ("lazy_amsgrad", 0.01, (0.9, 0.999), 1e-6, False)),
    ("rowwise-adagrad", RowwiseAdagrad(lr=0.1, eps=1e-6, initial_accumulator_value=0.2),
     ("rowwise_adagrad", 0.1, (0.0, 0.0), 1e-6, True, 0.2)),
    ("rowwise-amsgrad", RowwiseAMSGrad(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
     ("rowwise_amsgrad", 0.01, (0.8, 0.99), 1e-6)),
    ("rowwise-amsgrad-no-m", RowwiseAMSGrad(lr=0.01, betas=(0.0, 0.99), eps=1e-6, bias_correction=False),
     ("rowwise_amsgrad", 0.01, (0.0, 0.99), 1e-6, False)),
]


@pytest.mark.parametrize("name,rule,ref", REF_CASES, ids=[c[0] for c in REF_CASES])
def test_matches_the_equations_step_for_step(name, rule, ref):
    batches = _batches()
    w, _ = _run_rule(rule, batches)
    torch.testing.assert_close(w, _ref_rows(ref[0], batches, *ref[1:]), rtol=1e-5, atol=1e-6)


def test_row_wise_state_is_one_value_per_row():
    assert RowwiseAdagrad().state_specs(7, 3) == {"sum": (7,)}
    assert RowwiseAMSGrad().state_specs(7, 3) == {"m": (7, 3), "v": (7,), "vmax": (7,)}
    assert RowwiseAMSGrad(betas=(0.0, 0.9)).state_specs(7, 3) == {"v": (7,), "vmax": (7,)}
    assert RowwiseAMSGrad().row_wise() == {"v", "vmax"} and LazyAdam().row_wise() == frozenset()


def test_local_copy_keeps_this_steps_increment_when_the_shared_value_lags():
    """A racer that rewrote s_i between our read and our add cannot lower our denominator: the
    step uses (value read + own increment); the shared value only receives the increment."""
    rule = RowwiseAdagrad(lr=1.0, eps=0.0)
    w, state = torch.zeros(2, 4), {"sum": torch.tensor([4.0, 0.0])}
    rule.update(w, torch.tensor([0]), torch.full((1, 4), 3.0), state, 1)
    assert state["sum"].tolist() == [13.0, 0.0]                      # 4 + mean(9)
    torch.testing.assert_close(w[0], torch.full((4,), -3.0 / math.sqrt(13.0)))


# ------------------------------------------------------------- no table-size allocation
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("rule", [RowwiseAdagrad(), LazyAdam(amsgrad=True), RowAdagrad(), RowSGD(weight_decay=0.1)],
                         ids=lambda r: r.name)
def test_a_huge_table_is_never_touched_beyond_its_rows(rule):
    rows, dim = 1 << 21, 256                             # 2 GiB per (rows, dim) buffer, never written
    table = torch.empty(rows, dim)
    state = {k: torch.empty(s) for k, s in rule.state_specs(rows, dim).items()}
    idx = torch.tensor([0, rows - 1, 12345, 12345])
    for buf in (table, *state.values()):
        buf[idx] = 0.0
    before = _rss()
    for t in range(1, 4):
        rule.update(table, idx, torch.ones(4, dim), state, t)
    assert _rss() - before < (64 << 20)                 # a copy of any buffer would add 2 GiB
    assert torch.isfinite(table[idx]).all() and float(table[12345, 0]) < 0


# -------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,match", [
    ((torch.zeros(5, 2), torch.tensor([0, 5]), torch.zeros(2, 2)), r"invalid row index 5: the table has 5 rows"),
    ((torch.zeros(5, 2), torch.tensor([-1]), torch.zeros(1, 2)), r"invalid row index -1"),
    ((torch.zeros(5, 2), torch.tensor([0], dtype=torch.int32), torch.zeros(1, 2)), "int64"),
    ((torch.zeros(5, 2), torch.tensor([0, 1]), torch.zeros(2, 3)), r"shape \(2, 2\)"),
    ((torch.zeros(5, 2), torch.tensor([0]), torch.zeros(1, 2, dtype=torch.float64)), "float32"),
    ((torch.zeros(10), torch.tensor([0]), torch.zeros(1, 2)), "2-D float32"),
])
def test_bad_input_is_one_config_error_line(args, match):
    with pytest.raises(ConfigError, match=match) as e:
        RowAdagrad().update(*args, {"sum": torch.zeros(args[0].shape)}, 1)
    assert "\n" not in str(e.value)


def test_bad_state_step_and_options():
    w, idx, vals = torch.zeros(5, 2), torch.tensor([1]), torch.ones(1, 2)
    with pytest.raises(ConfigError, match=r"invalid state 'sum' \(\(5, 2\) torch.float32\).*\(5,\)"):
        RowwiseAdagrad().update(w, idx, vals, {"sum": torch.zeros(5, 2)}, 1)
    with pytest.raises(ValueError, match="invalid step=0"):
        RowSGD().update(w, idx, vals, {}, 0)
    with pytest.raises(ConfigError, match="invalid lr=-1"):
        RowSGD(lr=-1)
    with pytest.raises(ConfigError, match="momentum"):
        RowSGD.from_options({"lr": 0.1, "momentum": 0.9})
    with pytest.raises(ConfigError, match="weight_decay.*torch.optim.Adagrad refuses it too"):
        RowAdagrad.from_options({"lr": 0.1, "weight_decay": 0.1})
    assert RowAdagrad.from_options({"lr": 0.5, "lr_decay": 0.1, "params": [], "foo": 1}) == \
        RowAdagrad(lr=0.5, lr_decay=0.1)
