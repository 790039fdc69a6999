"""Moving values between a process's local model and a shared one: ``push_gradients`` and
``pull_parameters``.

Gradients: one private buffer per process
-----------------------------------------
``SharedModel.flat_grad`` is deliberately **not** in shared memory: it is an ordinary buffer of
the process that holds the ``SharedModel``.  In an actor-learner (A3C) loop each process applies
*its own* gradient to the shared parameters; a gradient buffer in shared memory would be written
by every process at once, and one process's step would apply a mix of several processes'
gradients (or a gradient half overwritten by another).  With a private buffer there is nothing to
race on but the parameters and optimizer state themselves, which is exactly Hogwild/A3C.

``push_gradients(local, shared)`` **overwrites** (by default): the shared parameters' ``.grad``
become views of this process's ``flat_grad`` holding a copy of ``local``'s current gradients,
and ``local``'s gradients are then set to ``None`` (``consume=True``).  Each step therefore
applies exactly the gradient of that step, whatever ``zero_grad`` convention the loop follows.
(Old A3C templates alias ``shared_param._grad = local_param.grad`` once and rely on
``optimizer.zero_grad()`` zeroing that shared tensor in place; ``torch.optim`` optimizers set it
to ``None`` since PyTorch 2.0, so the local gradient is never zeroed and silently accumulates,
``g1, g1+g2, g1+g2+g3, ...``.  The shared optimizers' ``zero_grad`` zeroes in place by default,
so such a template works with them unchanged.)  ``accumulate=True`` adds into the buffer instead
(several backward passes per step; zero the buffer with ``shared.zero_grad()``).

Sparse gradients (``nn.Embedding(sparse=True)``) stay sparse: the shared parameter's ``.grad``
becomes a private coalesced sparse copy (duplicate rows summed once), never a dense gradient of
the table's size; with ``accumulate=True`` sparse gradients are added sparsely.  A table (a
parameter with no slot in ``flat_grad``, :mod:`shmopt.shared.model`) whose local gradient is
dense anyway (a local model built without ``sparse=True``, or a tied weight) gets that gradient
itself (``consume=True``) or a private copy: O(table), as the local gradient already is.

``pull_parameters(local, shared)`` copies the shared parameters into ``local`` (a lock-free
read, as in Hogwild: coordinates updated concurrently may be mixed) and marks the read for the
staleness of the optimizers built on ``shared`` in this process.  A local copy of a table is of
the table's size; to hold nothing of that size, run the model on the shared parameters
directly (its tables' gradients are private and sparse) and call ``optimizer.step()``.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..rules import from_sparse
from .guards import shared_of
from .model import SharedModel

__all__ = ["push_gradients", "pull_parameters", "params_of"]


def params_of(local: "nn.Module | SharedModel | Iterable[Tensor]") -> list[Tensor]:
    """The parameters of a model (local or shared), or the given tensors, as a list."""
    return list(local.parameters()) if isinstance(local, (nn.Module, SharedModel)) else list(local)


def _as_shared(shared: "SharedModel | nn.Module") -> SharedModel:
    if isinstance(shared, SharedModel):
        return shared
    found = shared_of(shared)
    if found is None:
        raise ConfigError(f"expected a SharedModel (from shmopt.shared.share()) or a module shared by "
                          f"it, got {type(shared).__name__}")
    return found


def _check_pair(local: list[Tensor], shared: SharedModel) -> None:
    shared.check()
    if len(local) != len(shared._params):
        raise ConfigError(f"the local model has {len(local)} parameters, the shared model "
                          f"{len(shared._params)}: they must have the same architecture")
    for i, (lp, sp) in enumerate(zip(local, shared._params)):
        if lp.shape != sp.shape:
            raise ConfigError(f"parameter {i}: local shape {tuple(lp.shape)} != shared shape "
                              f"{tuple(sp.shape)}: the models must have the same architecture")


@torch.no_grad()
def push_gradients(local: nn.Module, shared: SharedModel | nn.Module, *, accumulate: bool = False,
                   consume: bool = True) -> None:
    """Put ``local``'s gradients into this process's private buffer ``shared.flat_grad`` and
    bind the shared parameters' ``.grad`` to it, ready for ``optimizer.step()`` (a table's
    ``.grad`` becomes a private sparse copy instead: see the module doc).

    Overwrites by default (a parameter whose local gradient is None gets ``.grad = None`` and is
    skipped by the step, as in torch); ``accumulate=True`` adds to what the buffer holds.
    ``consume=True`` then sets ``local``'s gradients to None, so the next backward pass starts
    from zero whatever the loop's ``zero_grad`` habits.
    """
    lparams = params_of(local)
    shared = _as_shared(shared)
    _check_pair(lparams, shared)
    for i, (lp, sp) in enumerate(zip(lparams, shared._params)):
        dst = shared.grad_buffer(i)
        g = lp.grad
        if dst is None:                                     # a table: no dense private slot
            sp.grad = _table_grad(g, sp.grad if accumulate else None, consume)
            continue
        bound = sp.grad is not None and not sp.grad.is_sparse and sp.grad.data_ptr() == dst.data_ptr()
        if g is not None and g.is_sparse:
            sp.grad = _sparse_grad(g, sp.grad if accumulate else None, dst)
            continue
        if accumulate:
            if not bound:
                dst.zero_()
            if g is not None:
                dst.add_(g)
            sp.grad = dst
        elif g is None:
            sp.grad = None
        else:
            dst.copy_(g)
            sp.grad = dst
    if consume:
        for lp in lparams:
            lp.grad = None


def _table_grad(g: Tensor | None, held: Tensor | None, consume: bool) -> Tensor | None:
    """The private gradient of a table given the local ``g``, added (out of place: ``held`` may
    be a tensor of the user's) to the ``held`` one when accumulating.  A sparse ``g`` is kept
    sparse; a dense one is taken as is when it is consumed, else copied."""
    if g is None:
        return held
    if g.is_sparse:
        if held is None:
            return _sparse_copy(g)
        return (held + g).coalesce() if held.is_sparse else held + g
    if held is not None:
        return held + g
    return g if consume else g.clone()


def _sparse_grad(g: Tensor, held: Tensor | None, dst: Tensor) -> Tensor:
    """The private gradient of a parameter given the sparse ``g``: ``g`` coalesced (its own copy),
    or added to the ``held`` one when accumulating: to a sparse one sparsely, into ``dst`` (the
    dense private buffer) when that is what the parameter holds already."""
    if held is not None and held.is_sparse:
        return (held + g).coalesce()
    if held is not None and held.data_ptr() == dst.data_ptr():
        return dst.add_(g)
    return _sparse_copy(g)


def _sparse_copy(g: Tensor) -> Tensor:
    """A coalesced sparse copy of ``g`` (duplicate rows summed once), sharing nothing with it."""
    idx, vals = from_sparse(g)
    if idx.data_ptr() == g._indices().data_ptr():         # already coalesced: copy what we keep
        idx, vals = idx.clone(), vals.clone()
    return torch.sparse_coo_tensor(idx[None], vals.view((idx.numel(),) + tuple(g.shape[1:])), g.shape,
                                   is_coalesced=True, check_invariants=False)


@torch.no_grad()
def pull_parameters(local: nn.Module, shared: SharedModel | nn.Module) -> None:
    """Copy the shared parameters into ``local`` (lock-free) and mark the read (staleness).

    Every parameter is copied, tables included; a worker that must hold nothing of a table's
    size computes on the shared module itself (``loss(shared).backward(); opt.step()``)."""
    lparams = params_of(local)
    shared = _as_shared(shared)
    _check_pair(lparams, shared)
    for lp, sp in zip(lparams, shared._params):
        lp.copy_(sp)
    shared.mark_read()
