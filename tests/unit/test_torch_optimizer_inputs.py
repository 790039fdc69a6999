"""torch's own optimizer test inputs (``torch.testing._internal.common_optimizers``:
``optim_inputs_func_adam``/``_sgd``/``_adagrad``, the kwargs torch's test suite runs its Adam, SGD
and Adagrad with) run against shmopt's shared optimizers: each input either gives the same
parameters as torch.optim after some steps, or is refused with a ConfigError naming the option.
The inputs that must match are listed, so refusing everything cannot pass."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import shmopt
from shmopt.errors import ConfigError

common = pytest.importorskip("torch.testing._internal.common_optimizers",
                             reason="torch's optimizer test inputs need the expecttest package (test extra)")

CASES = [(torch.optim.Adam, shmopt.SharedAdam, common.optim_inputs_func_adam),
         (torch.optim.SGD, shmopt.SharedSGD, common.optim_inputs_func_sgd),
         (torch.optim.Adagrad, shmopt.SharedAdagrad, common.optim_inputs_func_adagrad)]
#: inputs that must match torch (all of them, today)
MUST_MATCH = {"Adam": {"default", "non-default lr", "nonzero weight_decay", "maximize", "amsgrad"},
              "SGD": {"default", "non-default lr", "tensor lr", "non-zero weight_decay", "momentum", "maximize",
                      "dampening", "weight_decay w/ momentum", "nesterov"},
              "Adagrad": {"default", "nonzero weight_decay", "maximize", "non-default lr",
                          "initial_accumulator_value", "lr_decay", "Tensor lr"}}
STEPS = 5


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))


def _train(model, opt) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = torch.randn(8, 6, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def _inputs():
    for torch_cls, shared_cls, inputs in CASES:
        for i in inputs(device="cpu"):
            yield pytest.param(torch_cls, shared_cls, i, id=f"{torch_cls.__name__}-{i.desc}")


@pytest.mark.parametrize("torch_cls, shared_cls, optim_input", list(_inputs()))
def test_torch_optimizer_inputs_match_or_are_refused(torch_cls, shared_cls, optim_input):
    kwargs = dict(optim_input.kwargs)
    reference = _model()
    _train(reference, torch_cls(reference.parameters(), **kwargs))
    mine = shmopt.share(_model())
    try:
        opt = shared_cls(mine.parameters(), **kwargs)
    except ConfigError as exc:
        assert optim_input.desc not in MUST_MATCH[torch_cls.__name__], f"refused: {exc}"
        mine.close()
        return
    _train(mine, opt)
    for (name, a), b in zip(reference.named_parameters(), mine.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6, msg=name)
    opt.close()
    mine.close()


def test_every_listed_input_exists():
    """The lists above follow torch's inputs: a renamed input must be listed again."""
    for torch_cls, _, inputs in CASES:
        assert MUST_MATCH[torch_cls.__name__] <= {i.desc for i in inputs(device="cpu")}


def test_a_maximize_state_dict_of_torch_loads_and_keeps_ascending():
    reference = _model()
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, maximize=True)
    _train(reference, ref_opt)
    mine = shmopt.share(_model())
    opt = shmopt.SharedSGD(mine.parameters(), lr=0.1, momentum=0.9)        # created without maximize
    mine.load_state_dict(reference.state_dict())
    opt.load_state_dict(ref_opt.state_dict())
    assert opt.param_groups[0]["maximize"] is True
    _train(reference, ref_opt)
    _train(mine, opt)
    for a, b in zip(reference.parameters(), mine.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
    opt.close()
    mine.close()
