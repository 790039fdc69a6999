"""The shared optimizers as drop-ins in the most-copied A3C train loop (pytorch-a3c's pattern).

Each step of that loop: the local model loads the shared state, ``optimizer.zero_grad()`` on an
optimizer built over the SHARED model's parameters, ``loss.backward()`` on the LOCAL model,
``ensure_shared_grads`` (alias ``shared_param._grad = local_param.grad``, once: it returns as soon
as a shared ``.grad`` exists), then ``optimizer.step()``.  The loop only works when ``zero_grad``
zeroes the aliased gradient in place; when it sets the shared ``.grad`` to None (torch >= 2.0's
default) the local gradient is never zeroed again and grows step after step (norms n, 2n, 3n on
identical data).  The gradient here does not depend on the parameters, so on identical data
every step's gradient norm must be the same.
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.multiprocessing as mp
from helpers import run_children
from torch import nn

import shmopt
from shmopt.rules import fused_adam_available

STEPS = 3
JOIN_S = 60
X = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.25, 1.5, -1.0, 2.0]])
C = torch.tensor([[1.0, -0.5], [0.75, 1.0]])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 2)


def _loss(model: nn.Module) -> torch.Tensor:
    return (model(X) * C).sum()          # linear in the parameters: the same gradient every step


def ensure_shared_grads(model: nn.Module, shared_model: nn.Module) -> None:
    """The template's helper, as the loop under test has it."""
    for param, shared_param in zip(model.parameters(), shared_model.parameters()):
        if shared_param.grad is not None:
            return
        shared_param._grad = param.grad


def template_loop(model: nn.Module, shared_model: nn.Module, optimizer, steps: int = STEPS) -> list[float]:
    """The template's train loop on identical data; returns each step's gradient norm."""
    norms = []
    for _ in range(steps):
        model.load_state_dict(shared_model.state_dict())
        optimizer.zero_grad()
        _loss(model).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)))
        ensure_shared_grads(model, shared_model)
        optimizer.step()
    return norms


def _reference(make_torch_opt, steps: int = STEPS) -> list[torch.Tensor]:
    """The parameters after ``steps`` correct updates with torch (one fresh gradient each)."""
    ref = _model()
    opt = make_torch_opt(ref.parameters())
    for _ in range(steps):
        opt.zero_grad()
        _loss(ref).backward()
        opt.step()
    return [p.detach() for p in ref.parameters()]


def _torch_adam(params, **hp):
    kind = dict(fused=True) if fused_adam_available() else dict(foreach=False)
    return torch.optim.Adam(params, **kind, **hp)


OPTIMIZERS = {
    "SharedAdam": (lambda ps: shmopt.SharedAdam(ps, lr=0.01), lambda ps: _torch_adam(ps, lr=0.01)),
    "SharedAMSGrad": (lambda ps: shmopt.SharedAMSGrad(ps, lr=0.01),
                      lambda ps: _torch_adam(ps, lr=0.01, amsgrad=True)),
    "SharedSGD": (lambda ps: shmopt.SharedSGD(ps, lr=0.01, momentum=0.9),
                  lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, foreach=False)),
}


def _norm_of_one_gradient() -> float:
    model = _model()
    _loss(model).backward()
    return float(torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0))


def _shared_model(how: str):
    """The shared model as the template makes it (torch shared memory) or with shmopt.share."""
    model = _model()
    if how == "share_memory":
        return model.share_memory(), None
    shared = shmopt.share(model)
    return model, shared


@pytest.mark.parametrize("how", ["share_memory", "shmopt.share"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_template_loop_applies_each_steps_own_gradient(name, how):
    ours, theirs = OPTIMIZERS[name]
    shared_model, shared = _shared_model(how)
    optimizer = ours(shared_model.parameters())
    try:
        optimizer.share_memory()                         # the template calls it; a no-op here
        norms = template_loop(_model(), shared_model, optimizer)
        n = _norm_of_one_gradient()
        assert norms == [n] * STEPS, f"the local gradient accumulated: norms {norms}"
        assert optimizer.step_count == STEPS
        for p, q in zip(shared_model.parameters(), _reference(theirs)):
            torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-7)
    finally:
        optimizer.close()
        if shared is not None:
            shared.close()


def test_zero_grad_zeroes_in_place_by_default_and_can_set_to_none():
    model = _model()
    with shmopt.SharedAdam(model.parameters()) as opt:
        _loss(model).backward()
        grads = [p.grad for p in model.parameters()]
        opt.zero_grad()
        assert all(p.grad is g and not g.any() for p, g in zip(model.parameters(), grads))
        opt.zero_grad(set_to_none=True)                  # torch's default, still available
        assert all(p.grad is None for p in model.parameters())


def test_the_check_fails_when_zero_grad_sets_to_none():
    """The loop's check is not vacuous: with torch's set-to-None zero_grad (torch.optim.Adam, or
    a shared optimizer told to set to None) the norms grow n, 2n, 3n and the assertion above
    would fail."""
    n = _norm_of_one_gradient()
    grown = [n * k for k in range(1, STEPS + 1)]
    shared_model = _model().share_memory()
    norms = template_loop(_model(), shared_model, torch.optim.Adam(shared_model.parameters(), lr=0.01))
    assert norms == pytest.approx(grown) and norms != [n] * STEPS
    shared_model = _model().share_memory()
    with shmopt.SharedAdam(shared_model.parameters(), lr=0.01) as opt:
        opt.zero_grad = functools.partial(opt.zero_grad, set_to_none=True)
        norms = template_loop(_model(), shared_model, opt)
    assert norms == pytest.approx(grown) and norms != [n] * STEPS


# ------------------------------------------------------------------ one spawned learner
def _learner(shared_model: nn.Module, optimizer, q) -> None:
    torch.set_num_threads(1)
    norms = template_loop(_model(), shared_model, optimizer)
    # plain lists: a tensor sent through the queue would need this process alive until it is read
    q.put((norms, optimizer.step_count, [p.detach().tolist() for p in shared_model.parameters()]))


@pytest.mark.timeout_s(120)
def test_template_loop_in_a_spawned_process():
    ctx = mp.get_context("spawn")
    shared_model = _model().share_memory()
    with shmopt.SharedAdam(shared_model.parameters(), lr=0.01) as optimizer:
        ((norms, count, child_params),) = run_children(ctx, _learner, [(shared_model, optimizer)], JOIN_S)
        assert norms == [_norm_of_one_gradient()] * STEPS, f"the local gradient accumulated: {norms}"
        assert count == optimizer.step_count == STEPS
        for p, c, q_ in zip(shared_model.parameters(), child_params, _reference(OPTIMIZERS["SharedAdam"][1])):
            assert p.detach().tolist() == c                 # the child's updates reached the parent
            torch.testing.assert_close(p.detach(), q_, rtol=1e-6, atol=1e-7)
