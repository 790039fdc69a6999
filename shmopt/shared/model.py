"""A module whose parameters live in one shmopt arena, for processes the user starts himself.

``share(model)`` copies the parameters into ONE flat float32 buffer in shared memory and makes
every ``nn.Parameter`` a view of it (same Parameter objects: ``model.parameters()``, hooks and
any optimizer built on them keep working).  The returned :class:`SharedModel` pickles *by
handle*: a child process started with ``torch.multiprocessing`` (spawn, forkserver or fork)
re-attaches to the same bytes (untracked; only the creating process ever unlinks the segment).

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
applies exactly the gradient of that step, whatever ``zero_grad`` convention the loop follows:
old ``SharedAdam`` templates alias ``shared_param._grad = local_param.grad`` once and rely on
``optimizer.zero_grad()`` zeroing that shared tensor in place; since PyTorch 2.0 it sets it to
``None`` instead, so the local gradient is never zeroed and silently accumulates
(``g1, g1+g2, g1+g2+g3, ...``).  ``accumulate=True`` adds into the buffer instead (several
backward passes per step, zero the buffer with ``shared.zero_grad()``).

``pull_parameters(local, shared)`` copies the shared parameters into ``local`` (a lock-free
read, as in Hogwild: coordinates updated concurrently may be mixed) and marks the read for the
staleness of the optimizers built on ``shared`` in this process.

Staying shared
--------------
Conversions that would move the parameters out of the arena (``.to(dtype/device)``,
``.double()``, ``.half()``, ``.cuda()``, ``.to_empty()``) raise :class:`SharingError`, on the
``SharedModel`` and on the wrapped module and its submodules alike; ``.share_memory()`` (the
parameters are shared already, torch would copy them into a new segment) warns and does
nothing.  A shared module handed to ``torch.multiprocessing`` (Process args, queues) travels by handle
like its ``SharedModel`` (torch would otherwise copy its parameters into a new segment, in this
process too).  ``param.share_memory_()``, ``param.data = ...`` and ``load_state_dict(assign=True)``
on the module cannot be intercepted: they are detected by ``check()``, which the shared
optimizers, ``push_gradients`` and ``pull_parameters`` run on every call.  Buffers (e.g.
BatchNorm statistics) are not shared.
"""
from __future__ import annotations

import os
import pickle
import warnings
import weakref
from collections.abc import Iterable, Iterator
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..engine.arena import Arena, ArenaHandle, Layout
from ..engine.flat import bind_params
from ..errors import ConfigError

__all__ = ["SharingError", "SharedModel", "share", "push_gradients", "pull_parameters"]

#: SharedModels attached in this process, by arena name (unpickling the same arena twice in a
#: process gives the same object, so optimizer and model unpickled separately agree).
_ATTACHED: weakref.WeakValueDictionary[str, "SharedModel"] = weakref.WeakValueDictionary()


class SharingError(ConfigError):
    """An operation would move shared parameters or state out of shared memory (or did)."""


# ------------------------------------------------------------------------- conversion guard
class _ApplyGuard:
    """Instance attribute ``module._apply``: refuses conversions that would un-share.

    ``nn.Module.to/double/half/cuda/share_memory/...`` all go through ``_apply(fn)``.  The guard
    runs ``fn`` on a one-element float32 probe first: returned unchanged -> harmless (``.cpu()``,
    ``.float()``, ``.to("cpu")``), passed on; moved in place -> ``share_memory()``, skipped with a
    warning; anything else -> :class:`SharingError`.  Pickled or deep-copied modules get an
    inert guard (plain ``_apply``).  The guard holds the SharedModel: it lives as long as its
    module, so ``share(model)`` may be called for its effect alone.
    """

    def __init__(self, module: nn.Module, shared: "SharedModel | None") -> None:
        self.module = module
        self.shared = shared

    def __call__(self, fn: Any, recurse: bool = True) -> nn.Module:
        shared = self.shared
        if shared is not None and not shared.closed:
            probe = torch.zeros(1)
            ptr = probe.data_ptr()
            out = fn(probe)
            if out is probe and probe.data_ptr() != ptr:
                warnings.warn("share_memory() on a module shared by shmopt.shared.share() does nothing: "
                              "its parameters already live in shared memory", stacklevel=3)
                return self.module
            if out is not probe:
                raise SharingError(
                    "this conversion would move the parameters out of shared memory (they live in the "
                    "arena created by shmopt.shared.share()): convert the model before share(), or "
                    "close() the SharedModel first to get private parameters back")
        return type(self.module)._apply(self.module, fn, recurse)

    def __reduce__(self):
        return (_ApplyGuard, (self.module, None))

    def __deepcopy__(self, memo: dict) -> "_ApplyGuard":
        return _ApplyGuard(memo.get(id(self.module), self.module), None)


def _shared_of(module: object) -> "SharedModel | None":
    """The live SharedModel whose module is ``module`` (through its guard), or None."""
    guard = getattr(module, "__dict__", {}).get("_apply")
    if isinstance(guard, _ApplyGuard) and guard.shared is not None and not guard.shared.closed:
        return guard.shared
    return None


def _reduce_module(module: nn.Module) -> tuple:
    """ForkingPickler reducer registered for the classes of shared modules: a shared module sent
    to another process travels by handle (as its SharedModel) instead of having torch copy its
    parameters into a new segment (which would also un-share them in this process)."""
    shared = _shared_of(module)
    if shared is not None:
        if shared.module is module:
            return (_module_of, (shared,))
        if any(True for _ in module.parameters()):
            raise SharingError(f"a submodule ({type(module).__name__}) of a shared model cannot be sent to "
                               f"another process on its own (torch would move the whole shared buffer "
                               f"out of the arena): send the SharedModel or its top-level module")
    return module.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


def _module_of(shared: "SharedModel") -> nn.Module:
    return shared.module


def _register_reducer(cls: type) -> None:
    if ForkingPickler._extra_reducers.get(cls, _reduce_module) is _reduce_module:
        ForkingPickler.register(cls, _reduce_module)


def _set_guards(module: nn.Module, shared: "SharedModel | None") -> None:
    for m in module.modules():
        if shared is None:
            m.__dict__.pop("_apply", None)
        else:
            m.__dict__["_apply"] = _ApplyGuard(m, shared)


# ------------------------------------------------------------------------------ SharedModel
class SharedModel:
    """A module whose parameters are views of one flat float32 buffer in a shmopt arena.

    Attributes: ``module`` (the wrapped ``nn.Module``), ``flat`` (the shared parameters),
    ``flat_grad`` (this process's private gradient buffer), ``owner`` (True in the creating
    process, the only one that unlinks).  Calling it calls the module; unknown attributes are
    looked up on the module.  Build it with :func:`share`.
    """

    def __init__(self, module: nn.Module, arena: Arena, shapes: list[torch.Size], owner: bool) -> None:
        self.module = module
        self.arena = arena
        self.owner = owner
        self.closed = False
        self._pid = os.getpid()
        self._shapes = shapes
        self.flat: Tensor = arena.tensor("params")
        self.flat_grad: Tensor = torch.zeros(self.flat.numel())
        self._params: list[nn.Parameter] = list(module.parameters())
        self._offsets: list[int] = np.cumsum([0] + [p.numel() for p in self._params]).tolist()
        self._ptrs: list[int] = [p.data_ptr() for p in self._params]
        self._index: dict[int, int] = {id(p): i for i, p in enumerate(self._params)}
        self._readers: weakref.WeakSet = weakref.WeakSet()
        _set_guards(module, self)
        for m in module.modules():
            _register_reducer(type(m))
        _ATTACHED[arena.name] = self
        self._finalizer = weakref.finalize(self, _release, arena, owner, self._pid)

    # -------------------------------------------------------------- module-like interface
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "module" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["module"], name)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return self.module.parameters(recurse)

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]:
        return self.module.named_parameters(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Copy values into the shared parameters (``assign=True`` would un-share: refused)."""
        if assign:
            raise SharingError("load_state_dict(assign=True) would replace the shared parameters by "
                               "private tensors: use the default assign=False (copies in place)")
        return self.module.load_state_dict(state_dict, strict=strict)

    def share_memory(self) -> "SharedModel":
        """No-op (the parameters are shared already); kept for A3C-style code."""
        return self

    def zero_grad(self) -> None:
        """Zero this process's gradient buffer and bind the parameters' ``.grad`` to it."""
        self.flat_grad.zero_()
        for p, a, b in zip(self._params, self._offsets, self._offsets[1:]):
            p.grad = self.flat_grad[a:b].view_as(p)

    # ----------------------------------------------------------------------- bookkeeping
    @property
    def name(self) -> str:
        return self.arena.name

    @property
    def numel(self) -> int:
        return self.flat.numel()

    def index_of(self, param: Tensor) -> int | None:
        """Position of ``param`` among the shared parameters, or None."""
        return self._index.get(id(param))

    def check(self) -> None:
        """Raise :class:`SharingError` if a parameter no longer points into the arena."""
        if self.closed:
            raise SharingError(f"the SharedModel {self.name} is closed")
        for i, p in enumerate(self._params):
            if p.data_ptr() != self._ptrs[i]:
                raise SharingError(
                    f"parameter {i} of the shared model was moved out of shared memory (by "
                    f"share_memory_(), .data = ..., .to(), or load_state_dict(assign=True)): updates "
                    f"no longer reach the other processes")

    def mark_read(self) -> None:
        """Record, for the staleness of this process's optimizers on this model, that the
        parameters were read now (called by :func:`pull_parameters`)."""
        for opt in list(self._readers):
            opt.mark_read()

    def _add_reader(self, optimizer: Any) -> None:
        self._readers.add(optimizer)

    # ------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Give the module private copies of its parameters, detach (and unlink, in the
        creating process).  Idempotent; other processes keep their mapping until they close."""
        if self.closed:
            return
        self.closed = True
        _set_guards(self.module, None)
        with torch.no_grad():
            for p in self._params:
                p.data = p.data.clone()
                p.grad = None
        if _ATTACHED.get(self.arena.name) is self:
            del _ATTACHED[self.arena.name]
        self.flat = self.flat_grad = None  # type: ignore[assignment]
        self._finalizer()

    def __enter__(self) -> "SharedModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self):
        if self.closed:
            raise SharingError(f"cannot pickle the closed SharedModel {self.name}")
        self.check()
        # Pickle the module's structure only: parameters emptied for the dump (the child binds
        # them to the arena), guards removed (they point at this process's SharedModel).
        saved = [(p, p.data, p.grad) for p in self._params]
        _set_guards(self.module, None)
        try:
            with torch.no_grad():
                for p in self._params:
                    p.grad = None
                    p.data = torch.empty(0)
            skeleton = pickle.dumps(self.module, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            for p, data, grad in saved:
                p.data = data
                p.grad = grad
            _set_guards(self.module, self)
        return (_attach, (self.arena.handle, skeleton, self._shapes))

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("owner" if self.owner else "attached")
        return f"SharedModel({type(self.module).__name__}, {self.numel} params, {self.name}, {state})"


def _release(arena: Arena, owner: bool, pid: int) -> None:
    """Finalizer (must not reference the SharedModel): detach; unlink in the creating process
    only (never in a forked child that inherited the object)."""
    arena.close(unlink=owner and os.getpid() == pid)


def _attach(handle: ArenaHandle, skeleton: bytes, shapes: list[torch.Size]) -> SharedModel:
    """Unpickle: the SharedModel of this process for that arena (attached untracked)."""
    existing = _ATTACHED.get(handle.storage.name)
    if existing is not None and not existing.closed:
        return existing
    module = pickle.loads(skeleton)
    arena = Arena.attach(handle)
    flat = arena.tensor("params")
    offset = 0
    for p, shape in zip(module.parameters(), shapes):
        n = int(np.prod(shape, dtype=np.int64))
        p.data = flat[offset:offset + n].view(shape)
        offset += n
    return SharedModel(module, arena, shapes, owner=False)


# --------------------------------------------------------------------------- public helpers
def share(model: nn.Module) -> SharedModel:
    """Move ``model``'s parameters into one new shmopt arena (in place); see the module doc.

    Returns the :class:`SharedModel` (the same one if ``model`` is shared already).  The
    parameters must be float32 on the CPU.  Close it (or use ``with``) when done.
    """
    if isinstance(model, SharedModel):
        return model
    if not isinstance(model, nn.Module):
        raise ConfigError(f"share() takes an nn.Module, got {type(model).__name__}")
    existing = _shared_of(model)
    if existing is not None:
        return existing
    params = list(model.parameters())
    if not params:
        raise ConfigError("share(): the model has no parameters")
    for p in params:
        if p.dtype != torch.float32 or p.device.type != "cpu" or p.is_sparse:
            raise ConfigError(f"share(): parameters must be dense float32 CPU tensors, got "
                              f"{p.dtype} on {p.device}; convert the model (e.g. .float()) first")
    if any(b.is_floating_point() for b in model.buffers()):
        warnings.warn("share(): the model's buffers (e.g. BatchNorm statistics) are not shared, "
                      "each process keeps its own copy", stacklevel=2)
    n = sum(p.numel() for p in params)
    arena = Arena.create(Layout.build([("params", (n,), np.float32)]))
    try:
        with torch.no_grad():
            bind_params(model, arena.tensor("params"), copy=True)
        return SharedModel(model, arena, [p.shape for p in params], owner=True)
    except BaseException:
        arena.close()
        raise


def _params_of(local: "nn.Module | SharedModel | Iterable[Tensor]") -> list[Tensor]:
    return list(local.parameters()) if isinstance(local, (nn.Module, SharedModel)) else list(local)


def _as_shared(shared: "SharedModel | nn.Module") -> SharedModel:
    if isinstance(shared, SharedModel):
        return shared
    found = _shared_of(shared)
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
    bind the shared parameters' ``.grad`` to it, ready for ``optimizer.step()``.

    Overwrites by default (a parameter whose local gradient is None gets ``.grad = None`` and is
    skipped by the step, as in torch); ``accumulate=True`` adds to what the buffer holds.
    ``consume=True`` then sets ``local``'s gradients to None, so the next backward pass starts
    from zero whatever the loop's ``zero_grad`` habits.
    """
    lparams = _params_of(local)
    shared = _as_shared(shared)
    _check_pair(lparams, shared)
    off = shared._offsets
    for i, (lp, sp) in enumerate(zip(lparams, shared._params)):
        dst = shared.flat_grad[off[i]:off[i + 1]].view_as(sp)
        g = lp.grad
        bound = sp.grad is not None and sp.grad.data_ptr() == dst.data_ptr()
        if g is not None and g.is_sparse:
            raise ConfigError("push_gradients(): sparse gradients are not supported")
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


@torch.no_grad()
def pull_parameters(local: nn.Module, shared: SharedModel | nn.Module) -> None:
    """Copy the shared parameters into ``local`` (lock-free) and mark the read (staleness)."""
    lparams = _params_of(local)
    shared = _as_shared(shared)
    _check_pair(lparams, shared)
    for lp, sp in zip(lparams, shared._params):
        lp.copy_(sp)
    shared.mark_read()
