"""Tests of shmopt.shared: torch parity, exact step count and shared state across spawned
processes, the A3C-template gradient bug, in-place load_state_dict, un-sharing guards,
pickling by handle and lifecycle.  Every child is joined with a timeout."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.multiprocessing as mp
from helpers import run_children
from torch import nn

from shmopt.errors import ConfigError
from shmopt.memory.shm import list_segments
from shmopt.rules import fused_adam_available
from shmopt.shared import (
    SharedAdam,
    SharedAMSGrad,
    SharedModel,
    SharedSGD,
    SharingError,
    pull_parameters,
    push_gradients,
    share,
)
from shmopt.strategies.lr import LrPolicy

TIGHT = {"rtol": 1e-6, "atol": 1e-7}
JOIN_S = 60


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def _loss(model: nn.Module, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 5, generator=gen), torch.randn(16, 3, generator=gen)
    return (model(x) - y).pow(2).mean()


@pytest.fixture
def spawn():
    return mp.get_context("spawn")


# --------------------------------------------------------------------------------- parity
def _torch_adam(params, **hp):
    kind = dict(fused=True) if fused_adam_available() else dict(foreach=False)
    return torch.optim.Adam(params, **kind, **hp)


CASES = [
    ("amsgrad", lambda ps: SharedAMSGrad(ps, lr=1e-2, weight_decay=0.01),
     lambda ps: _torch_adam(ps, lr=1e-2, weight_decay=0.01, amsgrad=True)),
    ("adam", lambda ps: SharedAdam(ps, lr=1e-2, betas=(0.8, 0.99)),
     lambda ps: _torch_adam(ps, lr=1e-2, betas=(0.8, 0.99))),
    ("sgd-momentum", lambda ps: SharedSGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, foreach=False)),
    ("sgd-nesterov", lambda ps: SharedSGD(ps, lr=0.05, momentum=0.9, nesterov=True),
     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, foreach=False)),
]


@pytest.mark.parametrize("flat", [True, False], ids=["shared-flat", "per-param"])
@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_one_process_matches_torch_step_for_step(name, ours, theirs, flat):
    model, ref = _net(), _net()
    shared = share(model) if flat else None
    opt, topt = ours(model.parameters()), theirs(ref.parameters())
    try:
        assert (opt._groups[0].flat is not None) is flat       # one kernel call per group
        for t in range(25):
            for m, o in ((model, opt), (ref, topt)):
                o.zero_grad()
                _loss(m, t).backward()
                o.step()
            for a, b in zip(model.parameters(), ref.parameters()):
                torch.testing.assert_close(a, b, **TIGHT)
        for p, q in zip(model.parameters(), ref.parameters()):
            for k, v in topt.state[q].items():
                if k != "step":
                    torch.testing.assert_close(opt.state[p][k], v, **TIGHT)
        assert opt.step_count == 25
    finally:
        opt.close()
        if shared is not None:
            shared.close()


def test_param_groups_and_lr_changes_match_torch():
    model, ref = _net(), _net()
    groups = lambda m: [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.003}]
    with SharedAdam(groups(model), lr=0.01) as opt:
        topt = _torch_adam(groups(ref), lr=0.01)
        for t in range(10):
            if t == 5:
                for o in (opt, topt):
                    o.param_groups[0]["lr"] = 0.02
            for m, o in ((model, opt), (ref, topt)):
                o.zero_grad()
                _loss(m, t).backward()
                o.step()
        for a, b in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, **TIGHT)


# ----------------------------------------------------------------- several real processes
def _child_steps(shared: SharedModel, opt: SharedAdam, rank: int, steps: int, barrier, q) -> None:
    torch.set_num_threads(1)
    local = _net(100 + rank)
    for t in range(steps):
        pull_parameters(local, shared)
        _loss(local, 1000 * rank + t).backward()
        opt.step_from(local)
        assert all(p.grad is None for p in local.parameters())       # consumed
    barrier.wait(timeout=JOIN_S)             # every child is done: the state no longer moves
    m = opt.state[next(shared.parameters())]["exp_avg"]
    q.put((rank, opt._counter.index, opt.process_steps, opt.step_count, float(m.double().sum()),
           float(shared.flat.double().sum())))


@pytest.mark.slow                     # two spawned processes: test_shared_sparse_optimizers, row_amsgrad
@pytest.mark.timeout_s(120)
def test_four_spawned_processes_exact_count_and_shared_state(spawn):
    n, steps = 4, 60
    with share(_net()) as shared, SharedAdam(shared.parameters(), lr=1e-3) as opt:
        before = shared.flat.clone()
        barrier = spawn.Barrier(n)
        results = run_children(spawn, _child_steps, [(shared, opt, r, steps, barrier) for r in range(n)])
        assert opt.step_count == n * steps                    # exact: no increment lost
        assert sorted(r[1] for r in results) == [1, 2, 3, 4]   # slot 0 is the parent's
        assert all(r[2] == steps and r[3] == n * steps for r in results)
        m = opt.state[next(shared.parameters())]["exp_avg"]
        assert m.abs().sum() > 0 and not torch.equal(shared.flat, before)
        # what the children wrote last is what the parent sees, in both arenas
        assert {r[4] for r in results} == {float(m.double().sum())}
        assert {r[5] for r in results} == {float(shared.flat.double().sum())}
        st = opt.stats()
        assert st["steps"] == n * steps and st["slots_used"] == n


def _child_reads_loaded_state(shared: SharedModel, opt: SharedAdam, q) -> None:
    p = next(shared.parameters())
    seen = (opt.step_count, float(opt.state[p]["exp_avg"].min()), float(opt.state[p]["exp_avg"].max()),
            float(p.detach().double().sum()))
    local = _net(7)
    pull_parameters(local, shared)
    _loss(local, 3).backward()
    opt.step_from(local)                     # a marker the parent must see
    q.put(seen)


@pytest.mark.timeout_s(120)
def test_load_state_dict_in_place_is_seen_by_a_child(spawn):
    with share(_net()) as shared, SharedAdam(shared.parameters(), lr=0.01) as opt:
        for t in range(3):
            opt.zero_grad()
            _loss(shared, t).backward()
            opt.step()
        sd = opt.state_dict()
        for st in sd["state"].values():
            st["exp_avg"].fill_(0.5)
            st["step"] = torch.tensor(7.0)
        p = next(shared.parameters())
        ptr = opt.state[p]["exp_avg"].data_ptr()
        opt.load_state_dict(sd)
        assert opt.state[p]["exp_avg"].data_ptr() == ptr        # same shared buffer, new values
        assert opt.step_count == 7
        flat_before = shared.flat.clone()
        p_sum = float(p.detach().double().sum())
        (seen,) = run_children(spawn, _child_reads_loaded_state, [(shared, opt)])
        assert seen == (7, 0.5, 0.5, p_sum)
        assert opt.step_count == 8 and not torch.equal(shared.flat, flat_before)


def _child_bumps_module(model: nn.Module, q) -> None:
    with torch.no_grad():
        model[0].bias.add_(1.0)              # in place, in the arena
    local = _net(3)
    pull_parameters(local, model)            # a shared module is accepted as well
    q.put(float(local[0].bias.sum()))


@pytest.mark.timeout_s(120)
def test_passing_the_module_itself_to_a_child_keeps_it_shared(spawn):
    model = _net()
    with share(model) as shared:
        before = model[0].bias.detach().clone()
        (child_sum,) = run_children(spawn, _child_bumps_module, [(model,)])
        shared.check()                        # torch did not move the parameters
        with pytest.raises(SharingError, match="submodule"):
            run_children(spawn, _child_bumps_module, [(model[0],)])
        shared.check()
        torch.testing.assert_close(model[0].bias.detach(), before + 1.0)
        assert child_sum == pytest.approx(float(model[0].bias.detach().sum()))


# -------------------------------------------------------------- the A3C template bug
G = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0]), torch.tensor([100.0, 200.0, 300.0])]
W0 = torch.tensor([0.5, -1.0, 2.0])


def _linear_model() -> nn.Module:
    m = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(W0)
    return m


def _grad_loss(model: nn.Module, g: torch.Tensor) -> torch.Tensor:
    return (model.weight.view(-1) * g).sum()        # d loss / d w = g


def _template_ensure_shared_grads(local: nn.Module, shared: nn.Module) -> None:
    # The pattern of old A3C repositories: alias the shared .grad to the local one, once.
    for lp, sp in zip(local.parameters(), shared.parameters()):
        if sp.grad is not None:
            return
        sp._grad = lp.grad


def test_naive_template_accumulates_gradients_on_current_torch():
    shared_model, local = _linear_model(), _linear_model()
    shared_model.share_memory()
    opt = torch.optim.SGD(shared_model.parameters(), lr=1.0)
    for g in G:
        local.load_state_dict(shared_model.state_dict())
        opt.zero_grad()                            # set_to_none=True since torch 2.0
        _grad_loss(local, g).backward()
        _template_ensure_shared_grads(local, shared_model)
        opt.step()
    accumulated = W0 - (G[0] + (G[0] + G[1]) + (G[0] + G[1] + G[2]))
    assert torch.equal(shared_model.weight.detach().view(-1), accumulated)


@pytest.mark.parametrize("how", ["push-step", "step_from"])
def test_shmopt_applies_each_steps_own_gradient(how):
    with share(_linear_model()) as shared, SharedSGD(shared.parameters(), lr=1.0) as opt:
        local = _linear_model()
        for g in G:
            pull_parameters(local, shared)
            opt.zero_grad()                        # the template's habit, kept on purpose
            _grad_loss(local, g).backward()        # local.zero_grad() never called
            if how == "push-step":
                push_gradients(local, shared)
                opt.step()
            else:
                opt.step_from(local)
        assert torch.equal(shared.module.weight.detach().view(-1), W0 - (G[0] + G[1] + G[2]))


def test_push_gradients_accumulate_and_private_buffer():
    with share(_linear_model()) as shared:
        local = _linear_model()
        for g in G[:2]:
            _grad_loss(local, g).backward()
            push_gradients(local, shared, accumulate=True)
        w = shared.module.weight
        assert torch.equal(w.grad.view(-1), G[0] + G[1])
        assert w.grad.data_ptr() == shared.flat_grad.data_ptr()   # bound to the private buffer
        assert shared.flat_grad.untyped_storage().data_ptr() != shared.flat.untyped_storage().data_ptr()
        _grad_loss(local, G[2]).backward()
        push_gradients(local, shared)                               # overwrite
        assert torch.equal(w.grad.view(-1), G[2])


# ------------------------------------------------------------------------- staleness
def test_staleness_lr_policy_between_two_attachments():
    with share(_linear_model()) as shared, SharedSGD(shared.parameters(), lr=1.0,
                                                     lr_policy=LrPolicy("staleness")) as a:
        b = pickle.loads(pickle.dumps(a))          # a second attachment, as in another process
        try:
            assert b._counter.index != a._counter.index
            local = _linear_model()
            pull_parameters(local, shared)         # marks the read for a and b
            for _ in range(3):
                _grad_loss(local, G[0]).backward()
                b.step_from(local)
            assert b.staleness == 2                # b's own steps made it stale too
            w = shared.module.weight.detach().view(-1).clone()
            _grad_loss(local, G[1]).backward()
            a.step_from(local)
            assert a.staleness == 3
            torch.testing.assert_close(shared.module.weight.detach().view(-1), w - G[1] / 3)
            assert a.step_count == b.step_count == 4 and a.stats()["staleness_max"] == 3
        finally:
            b.close()


# --------------------------------------------------------------------- un-sharing guards
def test_unsharing_conversions_raise_or_warn():
    model = _net()
    with share(model) as shared:
        ptrs = [p.data_ptr() for p in model.parameters()]
        for convert in (lambda m: m.double(), lambda m: m.half(), lambda m: m.to(torch.float64),
                        lambda m: m[0].double(), lambda m: m.to_empty(device="cpu")):
            with pytest.raises(SharingError):
                convert(model)
        with pytest.raises(SharingError):
            shared.to(torch.float64)
        with pytest.raises(SharingError):
            shared.load_state_dict(model.state_dict(), assign=True)
        model.to("cpu").float().cpu()                              # harmless: allowed
        with pytest.warns(UserWarning, match="does nothing"):
            model.share_memory()
        assert [p.data_ptr() for p in model.parameters()] == ptrs
        assert shared.share_memory() is shared
        assert share(model) is shared


def test_param_share_memory_is_detected_at_step():
    with share(_net()) as shared, SharedAdam(shared.parameters()) as opt:
        p = next(shared.parameters())
        p.share_memory_()                        # moves the storage: cannot be intercepted
        _loss(shared, 0).backward()
        with pytest.raises(SharingError, match="moved out of shared memory"):
            opt.step()
        with pytest.raises(SharingError):
            pull_parameters(_net(), shared)


def test_pickling_an_optimizer_over_private_params_is_refused():
    model = _net()
    with SharedAdam(model.parameters()) as opt:
        with pytest.raises(SharingError, match="not in shared memory"):
            pickle.dumps(opt)
        model.share_memory()                     # torch shared memory is accepted
    with SharedAdam(model.parameters()) as opt:
        pickle.dumps(opt)


def test_add_param_group_and_bad_hyper_parameters():
    with pytest.raises(ConfigError):
        SharedAdam(_net().parameters(), betas=(1.5, 0.9))
    with pytest.raises(ConfigError):
        SharedSGD(_net().parameters(), max_processes=0)
    with SharedSGD(_net()[0].parameters(), lr=0.1) as opt:
        with pytest.raises(ConfigError):
            opt.add_param_group({"params": _net()[2].parameters()})


def test_slot_table_is_bounded_and_slots_are_reused():
    with share(_net()) as shared, SharedSGD(shared.parameters(), lr=0.1, max_processes=2) as opt:
        blob = pickle.dumps(opt)
        b = pickle.loads(blob)
        with pytest.raises(ConfigError, match="max_processes"):
            pickle.loads(blob)
        _loss(shared, 0).backward()
        b.step()
        b.close()                                 # frees the slot, keeps its count
        c = pickle.loads(blob)
        assert c._counter.index == 1 and c.step_count == 1
        c.close()


# ---------------------------------------------------------- state dict, pickling, lifecycle
def test_state_dict_round_trip_and_torch_compatibility():
    model, other, ref = _net(), _net(), _net()
    with share(model) as s1, share(other) as s2, SharedAMSGrad(s1.parameters(), lr=0.01) as a, \
            SharedAMSGrad(s2.parameters(), lr=0.01) as b:
        topt = _torch_adam(ref.parameters(), lr=0.01, amsgrad=True)
        for t in range(4):
            for m, o in ((model, a), (ref, topt)):
                o.zero_grad()
                _loss(m, t).backward()
                o.step()
        sd = a.state_dict()
        b.load_state_dict(sd)
        s2.load_state_dict(s1.state_dict())
        sd2 = b.state_dict()
        assert sd2["param_groups"] == sd["param_groups"] and sd2["state"].keys() == sd["state"].keys()
        for i, st in sd["state"].items():
            assert st.keys() == sd2["state"][i].keys() == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
            for k in st:
                assert torch.equal(st[k], sd2["state"][i][k])
        # torch's state dict loads too, and the run goes on exactly as torch's
        b.load_state_dict(topt.state_dict())
        assert b.step_count == 4
        for t in range(4, 8):
            for m, o in ((other, b), (ref, topt)):
                o.zero_grad()
                _loss(m, t).backward()
                o.step()
        for x, y in zip(other.parameters(), ref.parameters()):
            torch.testing.assert_close(x, y, **TIGHT)


def test_pickles_by_handle_and_closes_idempotently():
    big = nn.Linear(1000, 500)
    shared = share(big)
    opt = SharedAdam(shared.parameters(), lr=0.01)
    names = {shared.name, opt.name}
    try:
        blob = pickle.dumps((shared, opt))
        assert len(blob) < 20_000 < 4 * shared.numel                 # handles, not data
        s2, o2 = pickle.loads(blob)
        assert s2 is shared                                          # same process: same object
        assert o2.param_groups[0]["params"][0] is big.weight and not o2.owner and opt.owner
        o2.step_from([torch.nn.Parameter(torch.zeros_like(p)) for p in big.parameters()])  # no grads
        assert opt.step_count == 0
        big.weight.grad = torch.ones_like(big.weight)
        o2.step()
        assert opt.step_count == 1 and opt.state[big.weight]["exp_avg"].abs().sum() > 0
        o2.close()
        o2.close()
        assert names <= set(list_segments())                        # an attachment never unlinks
        with pytest.raises(SharingError):
            o2.step()
    finally:
        opt.close()
        opt.close()
        shared.close()
        shared.close()
    assert not names & set(list_segments())
    assert big.weight.data_ptr() != 0 and torch.isfinite(big.weight).all()   # private copy back
    big.double()                                                     # no longer guarded
