"""Tests of shmopt.rules: parity with torch.optim, APAM formula, in-place contract, pickling,
validation and the make_rule factory."""
from __future__ import annotations

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
import torch

from shmopt.errors import ConfigError
from shmopt.rules import RULES, SGD, Adam, AMSGrad, Rule, fused_adam_available, make_rule
from shmopt.rules.adam import NO_BIAS_CORRECTION_STEP

TIGHT = {"rtol": 1e-6, "atol": 1e-7}
STEPS = 50

needs_fused = pytest.mark.skipif(not fused_adam_available(), reason="torch._fused_adam_ unavailable")
FUSED_MODES = [pytest.param(False, id="ops"), pytest.param(True, id="fused", marks=needs_fused)]


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    # Keeps the module fast and steady on a busy machine (OpenMP threads degrade badly under
    # CPU contention); results do not depend on the thread count.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _state(rule: Rule, n: int) -> dict[str, torch.Tensor]:
    state = {k: torch.full((n,), 123.0) for k in rule.state_names}  # garbage: init must reset it
    rule.init(state)
    return state


def _grads(n: int, steps: int = STEPS, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen) for _ in range(steps)]


def _run_rule(rule: Rule, x0: torch.Tensor, grads: list[torch.Tensor]):
    x = x0.clone()
    state = _state(rule, x.numel())
    for t, g in enumerate(grads, start=1):
        g_before = g.clone()
        rule.update(x, g, state, step=t)
        assert torch.equal(g, g_before), "update must not modify the gradient"
    return x, state


def _run_torch(opt_factory, x0: torch.Tensor, grads: list[torch.Tensor]):
    p = torch.nn.Parameter(x0.clone())
    opt = opt_factory([p])
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach(), opt.state[p]


# ---------------------------------------------------------------------------------- SGD parity
SGD_CASES = [
    dict(lr=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.5, dampening=1.0),
    dict(lr=0.05, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, dampening=0.5, weight_decay=0.1),
]


@pytest.mark.parametrize("n", [1000, 100_000])
@pytest.mark.parametrize("hp", SGD_CASES, ids=lambda hp: ",".join(f"{k}={v}" for k, v in hp.items()))
def test_sgd_matches_torch(hp: dict, n: int) -> None:
    x0 = torch.randn(n, generator=torch.Generator().manual_seed(1))
    grads = _grads(n)
    rule = SGD(**hp)
    x, state = _run_rule(rule, x0, grads)
    ref, ref_state = _run_torch(lambda ps: torch.optim.SGD(ps, foreach=False, **hp), x0, grads)
    assert not torch.equal(x, x0)
    torch.testing.assert_close(x, ref, **TIGHT)
    if hp.get("momentum", 0.0):
        assert rule.state_names == ("momentum_buffer",)
        torch.testing.assert_close(state["momentum_buffer"], ref_state["momentum_buffer"], **TIGHT)
    else:
        assert rule.state_names == ()


def test_sgd_dampening_first_step_is_plain_gradient() -> None:
    # torch starts the momentum buffer at the first gradient (no dampening on step 1).
    rule = SGD(lr=1.0, momentum=0.9, dampening=0.5)
    x = torch.zeros(4)
    state = _state(rule, 4)
    g = torch.tensor([1.0, -2.0, 3.0, 4.0])
    rule.update(x, g, state, step=1)
    assert torch.equal(state["momentum_buffer"], g)
    assert torch.equal(x, -g)
    rule.update(x, g, state, step=2)
    assert torch.equal(state["momentum_buffer"], 0.9 * g + 0.5 * g)


# --------------------------------------------------------------------------------- Adam parity
ADAM_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, weight_decay=0.05),
    dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, amsgrad=True),
    dict(lr=1e-2, amsgrad=True, weight_decay=0.05),
]


@pytest.mark.parametrize("fused", FUSED_MODES)
@pytest.mark.parametrize("n", [1000, 100_000])
@pytest.mark.parametrize("hp", ADAM_CASES, ids=lambda hp: ",".join(f"{k}={v}" for k, v in hp.items()))
def test_adam_matches_torch(hp: dict, n: int, fused: bool) -> None:
    x0 = torch.randn(n, generator=torch.Generator().manual_seed(2))
    grads = _grads(n, seed=3)
    rule = Adam(fused=fused, **hp)
    x, state = _run_rule(rule, x0, grads)
    kind = dict(fused=True) if fused else dict(foreach=False, fused=False)
    ref, ref_state = _run_torch(lambda ps: torch.optim.Adam(ps, **kind, **hp), x0, grads)
    assert not torch.equal(x, x0)
    torch.testing.assert_close(x, ref, **TIGHT)
    torch.testing.assert_close(state["m"], ref_state["exp_avg"], **TIGHT)
    torch.testing.assert_close(state["v"], ref_state["exp_avg_sq"], **TIGHT)
    if hp.get("amsgrad"):
        assert rule.state_names == ("m", "v", "vmax")
        torch.testing.assert_close(state["vmax"], ref_state["max_exp_avg_sq"], **TIGHT)
    else:
        assert rule.state_names == ("m", "v")


@pytest.mark.parametrize("fused", FUSED_MODES)
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_amsgrad_class_matches_torch(fused: bool, wd: float) -> None:
    n = 5000
    x0 = torch.randn(n, generator=torch.Generator().manual_seed(4))
    # gradients with shrinking scale make vmax differ from v (the max actually matters)
    grads = [g * (3.0 if t < 10 else 0.1) for t, g in enumerate(_grads(n, seed=5))]
    rule = AMSGrad(lr=1e-2, weight_decay=wd, fused=fused)
    assert rule.name == "amsgrad" and rule.amsgrad is True
    x, state = _run_rule(rule, x0, grads)
    kind = dict(fused=True) if fused else dict(foreach=False, fused=False)
    ref, ref_state = _run_torch(
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=wd, amsgrad=True, **kind), x0, grads)
    assert not torch.equal(state["vmax"], state["v"])
    torch.testing.assert_close(x, ref, **TIGHT)
    torch.testing.assert_close(state["vmax"], ref_state["max_exp_avg_sq"], **TIGHT)
    # plain Adam on the same gradients ends elsewhere: the AMSGrad path is really taken
    x_adam, _ = _run_rule(Adam(lr=1e-2, weight_decay=wd, fused=fused), x0, grads)
    assert (x_adam - x).abs().max() > 1e-4


@needs_fused
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("hp", ADAM_CASES, ids=lambda hp: ",".join(f"{k}={v}" for k, v in hp.items()))
def test_fused_and_ops_agree(hp: dict, bias_correction: bool) -> None:
    n = 20_000
    x0 = torch.randn(n, generator=torch.Generator().manual_seed(6))
    grads = _grads(n, seed=7)
    xf, sf = _run_rule(Adam(fused=True, bias_correction=bias_correction, **hp), x0, grads)
    xo, so = _run_rule(Adam(fused=False, bias_correction=bias_correction, **hp), x0, grads)
    torch.testing.assert_close(xf, xo, rtol=1e-5, atol=1e-6)
    for k in sf:
        torch.testing.assert_close(sf[k], so[k], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------- APAM (no correction)
def _apam_reference(x0, grads, lr, b1, b2, eps, wd, amsgrad):
    x = x0.double().numpy().copy()
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    vhat = np.zeros_like(x)
    for g in grads:
        g = g.double().numpy() + wd * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vhat = np.maximum(vhat, v) if amsgrad else v
        x = x - lr * m / (np.sqrt(vhat) + eps)
    return x, m, v, vhat


@pytest.mark.parametrize("fused", FUSED_MODES)
@pytest.mark.parametrize("amsgrad", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_no_bias_correction_matches_formula(fused: bool, amsgrad: bool, wd: float) -> None:
    n, lr, b1, b2, eps = 2000, 1e-2, 0.9, 0.999, 1e-8
    x0 = torch.randn(n, generator=torch.Generator().manual_seed(8))
    grads = [g * (2.0 if t < 5 else 0.5) for t, g in enumerate(_grads(n, seed=9))]
    rule = Adam(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=amsgrad,
                bias_correction=False, fused=fused)
    x, state = _run_rule(rule, x0, grads)
    rx, rm, rv, rvhat = _apam_reference(x0, grads, lr, b1, b2, eps, wd, amsgrad)
    np.testing.assert_allclose(state["m"].numpy(), rm, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(state["v"].numpy(), rv, rtol=1e-5, atol=1e-9)
    if amsgrad:
        np.testing.assert_allclose(state["vmax"].numpy(), rvhat, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(x.numpy(), rx, rtol=1e-5, atol=1e-6)
    # and it is really not the bias-corrected rule (which moves ~10x further early on)
    xc, _ = _run_rule(Adam(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=amsgrad,
                           fused=fused), x0, grads)
    assert np.abs(xc.numpy() - rx).max() > 1e-3


def test_no_bias_correction_step_makes_corrections_exactly_one() -> None:
    step = float(np.float32(NO_BIAS_CORRECTION_STEP))
    assert step == NO_BIAS_CORRECTION_STEP  # exact in float32 ...
    assert int(step) < 2**63  # ... and in int64
    for b in [0.0, 0.5, 0.9, 0.999, 0.99999999, 1 - 2**-24, math.nextafter(1.0, 0.0)]:
        assert 1 - b**step == 1.0
        assert math.sqrt(1 - b**step) == 1.0


@needs_fused
@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_no_bias_correction_is_exact(amsgrad: bool) -> None:
    # Powers of two everywhere: every operation is exact in float32, so the result is exact iff
    # both bias corrections are exactly 1 (with betas this close to 1, any step a training
    # run can reach would leave them far from 1: beta^1e6 ~ 0.94 here).
    b = 1 - 2**-24
    n = 37  # vectorised body + scalar tail of the kernel
    rule = Adam(lr=2**-10, betas=(b, b), eps=0.0, amsgrad=amsgrad, bias_correction=False, fused=True)
    x = torch.zeros(n)
    state = _state(rule, n)
    g = torch.full((n,), 2.0**12)
    rule.update(x, g, state, step=1)
    assert torch.equal(state["m"], torch.full((n,), 2.0**-12))
    assert torch.equal(state["v"], torch.ones(n))
    assert torch.equal(x, torch.full((n,), -(2.0**-22)))


def test_eps_zero_allowed() -> None:
    rule = AMSGrad(lr=0.1, eps=0.0, bias_correction=False)
    x = torch.zeros(3)
    state = _state(rule, 3)
    rule.update(x, torch.tensor([1.0, -4.0, 0.0]), state, step=1)
    # a coordinate with vhat = 0 gives 0/0 (documented); the others follow the formula
    torch.testing.assert_close(x[:2], torch.tensor([-0.1 * 0.1 / 0.001**0.5, 0.1 * 0.1 / 0.001**0.5]))
    assert math.isnan(float(x[2]))


# --------------------------------------------------------------------------- in-place contract
ALL_RULES = [
    pytest.param(lambda: SGD(lr=0.1), id="sgd"),
    pytest.param(lambda: SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), id="sgd-nesterov"),
    pytest.param(lambda: Adam(lr=0.01, weight_decay=0.01, fused=False), id="adam-ops"),
    pytest.param(lambda: AMSGrad(lr=0.01, bias_correction=False, fused=False), id="apam-ops"),
    pytest.param(lambda: Adam(lr=0.01, weight_decay=0.01, fused=True), id="adam-fused", marks=needs_fused),
    pytest.param(lambda: AMSGrad(lr=0.01, fused=True), id="amsgrad-fused", marks=needs_fused),
    pytest.param(lambda: AMSGrad(lr=0.01, bias_correction=False, fused=True), id="apam-fused",
                 marks=needs_fused),
]


@pytest.mark.parametrize("make", ALL_RULES)
def test_views_into_larger_buffer(make) -> None:
    rule = make()
    n, pad = 1003, 17
    k = len(rule.state_names)
    x0 = torch.randn(n, generator=torch.Generator().manual_seed(10))
    grads = _grads(n, steps=5, seed=11)
    expected_x, expected_state = _run_rule(make(), x0, grads)

    # one arena laid out as [pad | params | pad | state_0 | pad | state_1 | ... | pad]
    arena = torch.full((pad + (n + pad) * (1 + k),), 7.5)
    def view(i: int) -> torch.Tensor:
        start = pad + i * (n + pad)
        return arena[start:start + n]
    params = view(0)
    params.copy_(x0)
    state = {name: view(1 + i) for i, name in enumerate(rule.state_names)}
    rule.init(state)
    ptrs = {name: t.data_ptr() for name, t in state.items()}
    ptr = params.data_ptr()
    for t, g in enumerate(grads, start=1):
        rule.update(params, g, state, step=t)

    assert params.data_ptr() == ptr and params.shape == (n,) and params.dtype == torch.float32
    assert params.is_contiguous()
    assert {name: t.data_ptr() for name, t in state.items()} == ptrs
    assert params.untyped_storage().data_ptr() == arena.untyped_storage().data_ptr()
    torch.testing.assert_close(params, expected_x, rtol=0, atol=0)
    for name in rule.state_names:
        torch.testing.assert_close(state[name], expected_state[name], rtol=0, atol=0)
    mask = torch.ones(arena.numel(), dtype=torch.bool)
    for i in range(1 + k):
        start = pad + i * (n + pad)
        mask[start:start + n] = False
    assert torch.all(arena[mask] == 7.5), "bytes outside the views were written"


@pytest.mark.parametrize("make", ALL_RULES)
def test_lr_override(make) -> None:
    n = 500
    x0 = torch.randn(n, generator=torch.Generator().manual_seed(12))
    grads = _grads(n, steps=3, seed=13)
    rule = make()
    base_lr = rule.lr
    x = x0.clone()
    state = _state(rule, n)
    for t, g in enumerate(grads, start=1):
        rule.update(x, g, state, step=t, lr=base_lr / 7)
    assert rule.lr == base_lr
    x_ref, _ = _run_rule(dataclasses.replace(make(), lr=base_lr / 7), x0, grads)
    x_def, _ = _run_rule(make(), x0, grads)
    torch.testing.assert_close(x, x_ref, rtol=0, atol=0)
    assert not torch.allclose(x, x_def)


def test_step_must_be_positive() -> None:
    for rule in (SGD(), Adam(fused=False), Adam()):
        x = torch.zeros(3)
        with pytest.raises(ValueError, match="step=0"):
            rule.update(x, torch.ones(3), _state(rule, 3), step=0)


# ---------------------------------------------------------------------------------- pickling
@pytest.mark.parametrize("make", ALL_RULES)
def test_pickle_round_trip(make) -> None:
    rule = make()
    clone = pickle.loads(pickle.dumps(rule))
    assert clone == rule and type(clone) is type(rule) and clone.hyper() == rule.hyper()

    n = 50_000  # a cached scratch tensor of this size would make the pickle > 200 kB
    x = torch.randn(n)
    state = _state(rule, n)
    rule.update(x, torch.randn(n), state, step=1)
    blob = pickle.dumps(rule)
    assert len(blob) < 2000
    clone = pickle.loads(blob)
    assert clone == rule
    assert "_scratch_cache" not in clone.__dict__
    # the clone works and computes the same update
    y, sy = x.clone(), {k: t.clone() for k, t in state.items()}
    g = torch.randn(n)
    rule.update(x, g, state, step=2)
    clone.update(y, g, sy, step=2)
    assert torch.equal(x, y)


def test_hyper_is_json_and_rebuilds() -> None:
    for rule in (SGD(lr=0.3, momentum=0.5, dampening=0.1, weight_decay=1e-4),
                 Adam(lr=0.02, betas=(0.8, 0.95), eps=0.0, amsgrad=True, bias_correction=False,
                      fused=False),
                 AMSGrad(lr=0.5, weight_decay=0.1)):
        hp = json.loads(json.dumps(rule.hyper()))
        assert hp == rule.hyper()
        assert make_rule(rule.name, **hp) == rule
    assert SGD(lr=0.3).hyper() == {"lr": 0.3, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
                                   "weight_decay": 0.0}


def test_init_zeroes_in_place() -> None:
    rule = AMSGrad()
    state = {k: torch.full((5,), 3.0) for k in rule.state_names}
    ptrs = {k: t.data_ptr() for k, t in state.items()}
    rule.init(state)
    assert all(torch.equal(t, torch.zeros(5)) for t in state.values())
    assert {k: t.data_ptr() for k, t in state.items()} == ptrs


# -------------------------------------------------------------------------------- validation
BAD = [
    (SGD, dict(lr=0.0), "lr"),
    (SGD, dict(lr=-1.0), "lr"),
    (SGD, dict(lr=float("nan")), "lr"),
    (SGD, dict(lr=float("inf")), "lr"),
    (SGD, dict(lr="0.1"), "lr"),
    (SGD, dict(lr=True), "lr"),
    (SGD, dict(momentum=-0.1), "momentum"),
    (SGD, dict(dampening=-0.5), "dampening"),
    (SGD, dict(weight_decay=-1e-4), "weight_decay"),
    (SGD, dict(nesterov=True), "nesterov"),
    (SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov"),
    (SGD, dict(nesterov=1, momentum=0.9), "nesterov"),
    (Adam, dict(lr=0.0), "lr"),
    (Adam, dict(lr=-1e-3), "lr"),
    (Adam, dict(betas=(1.0, 0.999)), "betas"),
    (Adam, dict(betas=(-0.1, 0.999)), "betas"),
    (Adam, dict(betas=(0.9, 1.0)), "betas"),
    (Adam, dict(betas=(0.9, -0.5)), "betas"),
    (Adam, dict(betas=(0.9,)), "betas"),
    (Adam, dict(betas=0.9), "betas"),
    (Adam, dict(betas="ab"), "betas"),
    (Adam, dict(eps=-1e-8), "eps"),
    (Adam, dict(weight_decay=-0.1), "weight_decay"),
    (Adam, dict(amsgrad="yes"), "amsgrad"),
    (Adam, dict(bias_correction=None), "bias_correction"),
    (Adam, dict(fused="auto"), "fused"),
    (AMSGrad, dict(lr=-1.0), "lr"),
    (AMSGrad, dict(betas=(0.9, 1.5)), "betas"),
    (AMSGrad, dict(amsgrad=False), "amsgrad"),
]


@pytest.mark.parametrize("cls,kwargs,param", BAD, ids=[f"{c.name}-{k}" for c, k, _ in BAD])
def test_validation_errors(cls, kwargs: dict, param: str) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert msg.startswith(f"invalid {param}"), msg
    assert "\n" not in msg and ": " in msg, msg


def test_validation_message_format() -> None:
    with pytest.raises(ConfigError, match=r"^invalid lr=-1\.0: must be > 0$"):
        SGD(lr=-1.0)
    with pytest.raises(ConfigError, match=r"^invalid betas\[1\]=1\.0: must be in \[0, 1\)$"):
        Adam(betas=(0.9, 1.0))


def test_valid_edge_values_accepted() -> None:
    assert SGD(lr=1, momentum=0, dampening=0).lr == 1.0 and isinstance(SGD(lr=1).lr, float)
    assert Adam(betas=[0.0, 0.0], eps=0.0).betas == (0.0, 0.0)
    assert Adam(lr=np.float32(0.5)).lr == 0.5
    SGD(momentum=0.9, nesterov=True)


def test_fused_true_unavailable_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import shmopt.rules.adam as adam_mod
    monkeypatch.setattr(adam_mod, "fused_adam_available", lambda *device: False)
    with pytest.raises(ConfigError, match=r"^invalid fused=True"):
        Adam(fused=True)

    def no_kernel(*a, **k):
        raise AssertionError("the fused kernel ran although it is unavailable")
    monkeypatch.setattr(torch, "_fused_adam_", no_kernel, raising=False)
    x = torch.ones(4)
    Adam(fused=None).update(x, torch.ones(4), {"m": torch.zeros(4), "v": torch.zeros(4)}, step=1)
    assert not torch.equal(x, torch.ones(4))   # auto falls back silently to the op sequence


def test_fused_probe_is_cached_and_matches_torch_attr() -> None:
    assert fused_adam_available() is fused_adam_available()
    if not hasattr(torch, "_fused_adam_"):
        assert fused_adam_available() is False


# --------------------------------------------------------------------------------- make_rule
def test_make_rule_builds_each_rule() -> None:
    assert set(RULES) == {"sgd", "adam", "amsgrad"}
    for name, cls in RULES.items():
        rule = make_rule(name, lr=0.25)
        assert type(rule) is cls and rule.name == name and rule.lr == 0.25
    assert make_rule("AMSGrad") == AMSGrad()
    assert make_rule("adam", betas=[0.5, 0.6]).betas == (0.5, 0.6)


def test_make_rule_unknown_name() -> None:
    with pytest.raises(ConfigError) as info:
        make_rule("x")
    assert str(info.value) == "unknown rule 'x': choose one of amsgrad, adam, sgd"
    with pytest.raises(ConfigError, match="unknown rule"):
        make_rule("rmsprop", lr=0.1)


def test_make_rule_unknown_hyper() -> None:
    with pytest.raises(ConfigError) as info:
        make_rule("sgd", lr=0.1, beta=0.9)
    msg = str(info.value)
    assert "beta" in msg and "'sgd'" in msg
    for accepted in ("lr", "momentum", "dampening", "nesterov", "weight_decay"):
        assert accepted in msg
    with pytest.raises(ConfigError, match="momentum"):
        make_rule("adam", momentum=0.9)
    with pytest.raises(ConfigError, match="invalid lr"):
        make_rule("adam", lr=-1)
