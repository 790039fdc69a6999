"""The flat-parameter trick: a module's parameters (and their ``.grad``) as views into one flat
float32 buffer, so one kernel call updates the whole model and nothing is concatenated per step.
Tables (parameters with sparse gradients, marked by :mod:`.tables`) are not part of it."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ProblemError
from .tables import is_table


def parameters(model: nn.Module) -> list[nn.Parameter]:
    """The dense parameters (every parameter but the tables), float32 checked."""
    every = list(model.parameters())
    if not every:
        raise ProblemError("the model has no parameters to train")
    params = [p for p in every if not is_table(p)]
    bad = [p.dtype for p in every if p.dtype != torch.float32]
    if bad:
        raise ProblemError(f"the model has parameters of dtype {bad[0]}: shmopt trains float32 "
                           f"parameters (call .float() in the model factory)")
    return params


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in parameters(model))


def _check(model: nn.Module, flat: torch.Tensor) -> list[nn.Parameter]:
    params = parameters(model)
    n = sum(p.numel() for p in params)
    if flat.numel() != n or flat.dim() != 1 or flat.dtype != torch.float32:
        raise ProblemError(f"the model has {n} parameters but the flat buffer holds {flat.numel()}: "
                           f"the model factory must build the same architecture every call")
    return params


def bind_params(model: nn.Module, flat: torch.Tensor, copy: bool = False) -> None:
    """Make every parameter a view into ``flat`` (copying the current values in if ``copy``)."""
    offset = 0
    for p in _check(model, flat):
        view = flat[offset:offset + p.numel()].view_as(p)
        if copy:
            view.copy_(p.data)
        p.data = view
        offset += p.numel()


def bind_grads(model: nn.Module, flat: torch.Tensor) -> None:
    """Make every ``.grad`` a view into ``flat``; zero ``flat`` (not ``zero_grad()``, which would
    set the grads to None and break the binding) before each backward pass."""
    offset = 0
    for p in _check(model, flat):
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()



def float_buffers(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """(owning module, name, tensor) of every floating-point buffer (BatchNorm's running mean and
    variance); integer buffers such as ``num_batches_tracked`` are not listed."""
    return [(m, name, b) for m in model.modules() for name, b in m.named_buffers(recurse=False)
            if b is not None and b.is_floating_point()]


def buffers_numel(model: nn.Module) -> int:
    return sum(b.numel() for _, _, b in float_buffers(model))


def bind_buffers(model: nn.Module, flat: torch.Tensor, copy: bool = False) -> None:
    """Make every floating-point buffer a float32 view into ``flat`` (copying its values in if
    ``copy``); in-place updates (BatchNorm's running statistics) then write into ``flat``."""
    found = float_buffers(model)
    n = sum(b.numel() for _, _, b in found)
    if flat.numel() != n or flat.dtype != torch.float32:
        raise ProblemError(f"the model has {n} buffer values but the flat buffer holds {flat.numel()}: "
                           f"the model factory must build the same architecture every call")
    offset = 0
    for module, name, b in found:
        view = flat[offset:offset + b.numel()].view(b.shape)
        if copy:
            view.copy_(b)
        module._buffers[name] = view
        offset += b.numel()
