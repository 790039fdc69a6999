"""A module whose parameters live in one shmopt arena, for processes the user starts himself.

``share(model)`` copies the parameters into ONE flat float32 buffer in shared memory and makes
every ``nn.Parameter`` a view of it (same Parameter objects: ``model.parameters()``, hooks and
any optimizer built on them keep working).  The returned :class:`SharedModel` pickles *by
handle*: a child process started with ``torch.multiprocessing`` (spawn, forkserver or fork)
re-attaches to the same bytes (untracked; only the creating process ever unlinks the segment:
:mod:`shmopt.shared.lifecycle`).  Unpickling the same arena twice in a process gives the same
object, so a model and an optimizer unpickled separately agree.

Gradients are private to each process: see :mod:`shmopt.shared.push_pull`.

Staying shared
--------------
Conversions that would move the parameters out of the arena (``.to(dtype/device)``,
``.double()``, ``.half()``, ``.cuda()``, ``.to_empty()``) raise :class:`SharingError`, on the
``SharedModel`` and on the wrapped module and its submodules alike; ``.share_memory()`` (the
parameters are shared already, torch would copy them into a new segment) warns and does
nothing.  A shared module handed to ``torch.multiprocessing`` (Process args, queues) travels by
handle like its ``SharedModel`` (:mod:`shmopt.shared.guards`).  ``param.share_memory_()``,
``param.data = ...`` and ``load_state_dict(assign=True)`` on the module cannot be intercepted:
they are detected by ``check()``, which the shared optimizers, ``push_gradients`` and
``pull_parameters`` run on every call.  Buffers (e.g. BatchNorm statistics) are not shared.
"""
from __future__ import annotations

import pickle
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..memory import Arena, ArenaHandle, Layout
from ..memory.flat import bind_params
from .errors import SharingError
from .guards import register_reducer, set_guards, shared_of
from .lifecycle import Attachment, handle_name

__all__ = ["SharedModel", "share", "model_of"]

#: SharedModels attached in this process, by arena name.
_ATTACHED: weakref.WeakValueDictionary[str, "SharedModel"] = weakref.WeakValueDictionary()


class SharedModel:
    """A module whose parameters are views of one flat float32 buffer in a shmopt arena.

    Attributes: ``module`` (the wrapped ``nn.Module``), ``flat`` (the shared parameters),
    ``flat_grad`` (this process's private gradient buffer), ``owner`` (True in the creating
    process, the only one that unlinks, until closed).  Calling it calls the module; unknown
    attributes are looked up on the module.  Build it with :func:`share`.
    """

    def __init__(self, module: nn.Module, hold: Attachment, shapes: list[torch.Size]) -> None:
        self.module = module
        self._hold = hold
        self._shapes = shapes
        self.flat: Tensor = hold.arena.tensor("params")
        self.flat_grad: Tensor = torch.zeros(self.flat.numel())
        self._numel = self.flat.numel()
        self._params: list[nn.Parameter] = list(module.parameters())
        self._offsets: list[int] = np.cumsum([0] + [p.numel() for p in self._params]).tolist()
        self._ptrs: list[int] = [p.data_ptr() for p in self._params]
        self._index: dict[int, int] = {id(p): i for i, p in enumerate(self._params)}
        self._readers: weakref.WeakSet = weakref.WeakSet()
        set_guards(module, self)
        for m in module.modules():
            register_reducer(type(m))
        _ATTACHED[hold.name] = self

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
    def arena(self) -> Arena:
        return self._hold.arena

    @property
    def name(self) -> str:
        return self._hold.name

    @property
    def owner(self) -> bool:
        return self._hold.owner

    @property
    def closed(self) -> bool:
        return self._hold.closed

    @property
    def numel(self) -> int:
        return self._numel

    def index_of(self, param: Tensor) -> int | None:
        """Position of ``param`` among the shared parameters, or None."""
        return self._index.get(id(param))

    def check(self) -> None:
        """Raise :class:`SharingError` if closed or a parameter no longer points into the arena."""
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
        parameters were read now (called by :func:`~shmopt.shared.pull_parameters`)."""
        for opt in list(self._readers):
            opt.mark_read()

    def add_reader(self, optimizer: Any) -> None:
        """Have :meth:`mark_read` reach ``optimizer`` (held weakly)."""
        self._readers.add(optimizer)

    # ------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Give the module private copies of its parameters, detach (and unlink, in the
        creating process).  Idempotent; other processes keep their mapping until they close."""
        if self.closed:
            return
        set_guards(self.module, None)
        with torch.no_grad():
            for p in self._params:
                p.data = p.data.clone()
                p.grad = None
        if _ATTACHED.get(self.name) is self:
            del _ATTACHED[self.name]
        self.flat = self.flat_grad = None  # type: ignore[assignment]
        self._hold.close()

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
        set_guards(self.module, None)
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
            set_guards(self.module, self)
        return (_attach, (self._hold.handle, skeleton, self._shapes))

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("owner" if self.owner else "attached")
        return f"SharedModel({type(self.module).__name__}, {self.numel} params, {self.name}, {state})"


def _attach(handle: ArenaHandle, skeleton: bytes, shapes: list[torch.Size]) -> SharedModel:
    """Unpickle: the SharedModel of this process for that arena (attached untracked)."""
    existing = _ATTACHED.get(handle_name(handle))
    if existing is not None and not existing.closed:
        return existing
    module = pickle.loads(skeleton)
    hold = Attachment.attach(handle)
    try:
        flat = hold.arena.tensor("params")
        offset = 0
        for p, shape in zip(module.parameters(), shapes):
            n = int(np.prod(shape, dtype=np.int64))
            p.data = flat[offset:offset + n].view(shape)
            offset += n
        return SharedModel(module, hold, shapes)
    except BaseException:
        hold.close()
        raise


def model_of(param: Tensor) -> tuple[SharedModel, int] | None:
    """The open SharedModel of this process that holds ``param``, and its position, or None."""
    for shared in list(_ATTACHED.values()):
        i = shared.index_of(param)
        if i is not None and not shared.closed:
            return shared, i
    return None


# ------------------------------------------------------------------------------- share()
def share(model: nn.Module) -> SharedModel:
    """Move ``model``'s parameters into one new shmopt arena (in place); see the module doc.

    Returns the :class:`SharedModel` (the same one if ``model`` is shared already).  The
    parameters must be float32 on the CPU.  Close it (or use ``with``) when done.
    """
    if isinstance(model, SharedModel):
        return model
    if not isinstance(model, nn.Module):
        raise ConfigError(f"share() takes an nn.Module, got {type(model).__name__}")
    existing = shared_of(model)
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
    hold = Attachment.create(Layout.build([("params", (n,), np.float32)]))
    try:
        with torch.no_grad():
            bind_params(model, hold.arena.tensor("params"), copy=True)
        return SharedModel(model, hold, [p.shape for p in params])
    except BaseException:
        hold.close()
        raise
