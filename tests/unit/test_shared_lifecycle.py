"""Tests of the pieces the shared model and optimizers are built from: the owner/attach
lifecycle (shmopt.shared.lifecycle), the rules building themselves from param groups, and the
layering of shmopt.shared (memory layer, rules, strategies, errors: never the engine)."""
from __future__ import annotations

import ast
import gc
import pathlib
import pickle

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import shmopt.shared
from shmopt.errors import ConfigError
from shmopt.memory import Layout
from shmopt.memory.shm import list_segments
from shmopt.rules import SGD, Adam, AMSGrad
from shmopt.shared import SharedAdam, SharedAMSGrad, SharedSGD, share
from shmopt.shared.lifecycle import Attachment, handle_name

JOIN_S = 60


def _layout() -> Layout:
    return Layout.build([("x", (4,), np.float32)])


# ----------------------------------------------------------------------------- lifecycle
def test_owner_unlinks_an_attachment_never_and_close_is_idempotent():
    owner = Attachment.create(_layout())
    calls = []
    owner.on_close(lambda: calls.append("owner"))
    other = Attachment.attach(pickle.loads(pickle.dumps(owner.handle)))
    other.on_close(lambda: calls.append("other"))
    assert handle_name(owner.handle) == owner.name == other.name
    assert owner.owner and not other.owner
    other.arena.tensor("x").fill_(3.0)
    assert owner.arena.tensor("x").tolist() == [3.0] * 4          # the same bytes
    other.close()
    other.close()
    assert other.closed and calls == ["other"] and owner.name in list_segments()
    owner.close()
    owner.close()
    assert owner.closed and not owner.owner and calls == ["other", "owner"]
    assert owner.name not in list_segments()


def test_the_finalizer_closes_and_unlinks_when_the_hold_is_collected():
    hold = Attachment.create(_layout())
    name, calls = hold.name, []
    hold.on_close(lambda: calls.append(1))
    del hold
    gc.collect()
    assert calls == [1] and name not in list_segments()


def _forked_child(hold: Attachment, adopt: bool, q) -> None:
    if adopt:
        hold.adopt_after_fork()
    q.put((hold.forked, hold.owner))
    hold.close()                             # a forked child must never unlink the parent's segment


@pytest.mark.parametrize("adopt", [False, True], ids=["inherited", "adopted"])
@pytest.mark.timeout_s(120)
def test_a_forked_child_never_unlinks_nor_runs_the_parents_callbacks(adopt):
    ctx = mp.get_context("fork")
    hold = Attachment.create(_layout())
    try:
        marker = hold.arena.tensor("x")
        hold.on_close(lambda: marker.fill_(-1.0))     # would write into the shared bytes
        q = ctx.Queue()
        p = ctx.Process(target=_forked_child, args=(hold, adopt, q))
        p.start()
        forked, owner = q.get(timeout=JOIN_S)
        p.join(timeout=JOIN_S)
        assert p.exitcode == 0
        assert forked is (not adopt) and owner is False
        assert hold.name in list_segments() and hold.owner
        assert marker.tolist() == [0.0] * 4               # the parent's callback did not run there
    finally:
        hold.close()
    assert hold.name not in list_segments()


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _forked_steps(shared, opt, q) -> None:
    local = _net()
    (local(torch.ones(2, 3)) ** 2).sum().backward()
    opt.step_from(local)
    q.put((opt._counter.index, opt.owner, opt.step_count))
    opt.close()
    shared.close()


@pytest.mark.timeout_s(120)
def test_an_optimizer_inherited_by_fork_takes_its_own_slot_and_never_unlinks():
    ctx = mp.get_context("fork")
    with share(_net()) as shared, SharedSGD(shared.parameters(), lr=0.1, momentum=0.9) as opt:
        names = {shared.name, opt.name}
        q = ctx.Queue()
        p = ctx.Process(target=_forked_steps, args=(shared, opt, q))
        p.start()
        index, owner, count = q.get(timeout=JOIN_S)
        p.join(timeout=JOIN_S)
        assert p.exitcode == 0
        assert index != opt._counter.index and not owner and count == 1
        assert names <= set(list_segments()) and opt.owner and shared.owner
        assert opt.step_count == 1 and opt.stats()["slots_used"] == 1
    assert not names & set(list_segments())


# --------------------------------------------------------------- rules from param groups
def test_rules_are_built_from_the_param_groups():
    model = _net()
    groups = [{"params": model[0].parameters(), "tag": "body"},       # a foreign key: ignored
              {"params": model[2].parameters(), "betas": (0.5, 0.9), "weight_decay": 0.1}]
    with SharedAdam(groups, lr=0.01, eps=1e-6) as opt:
        r0, r1 = (g.rule for g in opt._groups)
        assert type(r0) is Adam and (r0.betas, r0.eps, r0.weight_decay) == ((0.9, 0.999), 1e-6, 0.0)
        assert (r1.betas, r1.weight_decay, r1.amsgrad) == ((0.5, 0.9), 0.1, False)
        opt.param_groups[1]["eps"] = 1e-3                 # changed hyper-parameter: rule rebuilt
        (model(torch.ones(2, 3)) ** 2).sum().backward()
        opt.step()
        assert opt._groups[1].rule.eps == 1e-3
    with SharedAMSGrad(_net().parameters()) as opt:
        assert type(opt._groups[0].rule) is AMSGrad
    with SharedSGD(_net().parameters(), lr=0.1, momentum=0.5, nesterov=True) as opt:
        rule = opt._groups[0].rule
        assert type(rule) is SGD and (rule.momentum, rule.nesterov) == (0.5, True)
    with SharedSGD(_net().parameters(), lr=0.0) as opt:     # lr = 0 is valid, as in torch
        assert opt._groups[0].rule.lr == 1.0                 # every step passes the group's lr


@pytest.mark.parametrize("make,match", [
    (lambda ps: SharedAdam(ps, betas=(1.5, 0.9)), r"param group 0: invalid betas\[0\]=1.5: must be in \[0, 1\)"),
    (lambda ps: SharedAdam(ps, lr=-1.0), r"param group 0: invalid lr=-1.0: must be >= 0"),
    (lambda ps: SharedSGD(ps, lr=0.1, nesterov=True), r"param group 0: invalid nesterov=True"),
    (lambda ps: SharedAdam([{"params": ps, "momentum": 0.9}]), r"param group 0: invalid momentum=0.9: "
                                                              r"momentum belongs to rule sgd"),
    (lambda ps: SharedAdam([{"params": ps, "amsgrad": True}]), r"param group 0: amsgrad cannot differ"),
])
def test_invalid_hyper_parameters_name_the_group_and_the_value(make, match):
    with pytest.raises(ConfigError, match=match):
        make(_net().parameters())


def test_switching_on_state_that_was_not_allocated_is_refused():
    model = _net()
    with SharedSGD(model.parameters(), lr=0.1) as opt:
        opt.param_groups[0]["momentum"] = 0.9
        (model(torch.ones(2, 3)) ** 2).sum().backward()
        with pytest.raises(ConfigError, match="not allocated at creation"):
            opt.step()


# ------------------------------------------------------------------------------ layering
def test_shared_imports_only_memory_rules_strategies_and_errors():
    root = pathlib.Path(shmopt.shared.__file__).parent
    allowed = {"memory", "rules", "strategies", "errors", "checks"}   # checks: beside errors
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:          # from ..x import y
                used = [node.module or ""]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:        # from shmopt.x import y
                used = [node.module[len("shmopt."):]] if node.module.startswith("shmopt.") else []
            elif isinstance(node, ast.Import):
                used = [a.name[len("shmopt."):] for a in node.names if a.name.startswith("shmopt.")]
            else:
                continue
            for module in used:
                assert module.split(".")[0] in allowed, f"{path.name} imports shmopt.{module}"
