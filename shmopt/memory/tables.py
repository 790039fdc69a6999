"""Tables: parameters with sparse gradients (``nn.Embedding``/``nn.EmbeddingBag`` with
``sparse=True``) that live in the arena as 2-D buffers, never as a private copy.

A process that trains a model with tables builds it on the ``meta`` device (no storage at all),
then gives every parameter real storage: a table parameter becomes a view of its arena buffer,
every other parameter a small private tensor (the flat binding, :mod:`.flat`, then makes it a view
of the shared dense parameters). Buffers that are not floating point (``num_batches_tracked``,
a user's index buffer) are copied from the values the caller passes; floating-point buffers are
bound into the arena by :func:`.flat.bind_buffers`. So a worker's private memory does not grow
with the tables. Table parameters carry a mark that the flat binding skips (:func:`is_table`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import ProblemError

_MARK = "_shmopt_table"


def is_table(p: Tensor) -> bool:
    """True for a parameter that is a table (kept out of the flat dense parameters)."""
    return bool(getattr(p, _MARK, False))


def mark_tables(model: nn.Module, names: tuple[str, ...]) -> list[nn.Parameter]:
    """Mark the named parameters as tables; they are returned in the order of ``names``."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ProblemError(f"the model has no parameter {missing[0]!r}: the model factory must build "
                           f"the same architecture every call")
    for n in names:
        setattr(params[n], _MARK, True)
    return [params[n] for n in names]


def _meta_attributes(model: nn.Module) -> bool:
    """A module keeps a tensor that is neither a parameter nor a buffer (``self.mask = ...``)."""
    return any(isinstance(v, Tensor) and v.is_meta for m in model.modules() for v in vars(m).values())


class _NoInitOnMeta(TorchFunctionMode):
    """Skip in-place ops (``normal_``, ``uniform_``, ``kaiming_uniform_``, ``zero_``, ...) on meta
    tensors: they have no values to set, and torch's meta kernels of the random ones import
    torch._dynamo (1-2 s, in every worker process that builds a model on meta)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            t = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(t, Tensor) and t.is_meta:
                return t
        return func(*args, **kwargs)


@contextmanager
def on_meta() -> Iterator[None]:
    """Build modules on the meta device (shapes, no storage), their initialisers skipped."""
    with torch.device("meta"), _NoInitOnMeta():
        yield


def meta_nbytes(model_fn: Callable[[], nn.Module]) -> int | None:
    """Bytes of the model's parameters, from a build on the meta device (nothing allocated);
    None when the factory cannot build there."""
    try:
        with on_meta():
            model = model_fn()
        return sum(p.numel() * p.element_size() for p in model.parameters())
    except Exception:  # noqa: BLE001 - the real build reports its failure
        return None


def fixed_buffers(model: nn.Module) -> dict[str, Tensor]:
    """The buffers that are not floating point, by qualified name (copied into each process)."""
    return {n: b.detach().clone() for n, b in model.named_buffers() if not b.is_floating_point()}


def attach_table(model: nn.Module, name: str, table: Tensor) -> nn.Parameter:
    """Make parameter ``name`` of ``model`` a marked view of ``table`` (its old storage, if any, is
    dropped); the new parameter is returned."""
    module_name, _, pname = name.rpartition(".")
    module = model.get_submodule(module_name)
    old = module._parameters[pname]
    if old.numel() != table.numel():
        raise ProblemError(f"parameter {name!r} has shape {tuple(old.shape)} but its table holds "
                           f"{tuple(table.shape)}: the model factory must build the same architecture")
    new = nn.Parameter(table.view(old.shape), requires_grad=old.requires_grad)
    setattr(new, _MARK, True)
    for m in model.modules():              # a tied table is replaced everywhere it appears
        for key, p in m._parameters.items():
            if p is old:
                m._parameters[key] = new
    return new


def build_attached(model_fn: Callable[[], nn.Module], tables: Mapping[str, Tensor],
                   fixed: Mapping[str, Tensor]) -> nn.Module:
    """The model with its tables attached to ``tables`` (name -> arena buffer), built on the meta
    device so that no table is ever allocated privately. A factory that cannot build on meta
    (it reads a tensor's values while building) or keeps a plain tensor attribute (which the meta
    build leaves without values) is built as usual instead; its private tables are dropped once
    attached."""
    try:
        with on_meta():
            model = model_fn()
        if _meta_attributes(model):                # a tensor the meta build cannot give values
            model = model_fn()
    except Exception:  # noqa: BLE001 - the plain build below reports a real failure
        model = model_fn()
    for name, table in tables.items():
        attach_table(model, name, table)
    replaced: dict[int, nn.Parameter] = {}
    for m in model.modules():
        for key, p in list(m._parameters.items()):
            if p is None or not p.is_meta:
                continue
            if id(p) not in replaced:
                replaced[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype),
                                               requires_grad=p.requires_grad)
            m._parameters[key] = replaced[id(p)]
        for key, b in list(m._buffers.items()):
            if b is not None and b.is_meta:
                m._buffers[key] = torch.zeros(b.shape, dtype=b.dtype)
    for name, value in fixed.items():
        module_name, _, bname = name.rpartition(".")
        model.get_submodule(module_name)._buffers[bname] = value.clone()
    return model
