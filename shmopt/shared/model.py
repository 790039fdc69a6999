"""A module whose parameters live in one shmopt arena, for processes the user starts himself.

``share(model)`` copies the parameters into ONE flat float32 buffer in shared memory and makes
every ``nn.Parameter`` a view of it (same Parameter objects: ``model.parameters()``, hooks and
any optimizer built on them keep working).  The returned :class:`SharedModel` pickles *by
handle*: a child process started with ``torch.multiprocessing`` (spawn, forkserver or fork)
re-attaches to the same bytes (untracked; only the creating process ever unlinks the segment:
:mod:`shmopt.shared.lifecycle`).  Unpickling the same arena twice in a process gives the same
object, so a model and an optimizer unpickled separately agree.

Gradients are private to each process: see :mod:`shmopt.shared.push_pull`.

Tables (sparse gradients)
-------------------------
A parameter whose gradient is sparse, a *table*, gets no slot in the private gradient buffer
``flat_grad``: its ``.grad`` stays the sparse COO tensor autograd gives (O(rows touched x dim)),
so no process holds anything of a table's size privately.  The tables are the weights of
``nn.Embedding`` / ``nn.EmbeddingBag`` built with ``sparse=True``, plus those named by
``share(model, sparse_params=[...])`` (parameters or their names in ``named_parameters()``) for
a module of one's own that produces sparse gradients (``F.embedding(..., sparse=True)``).
``flat_grad`` covers the other (dense) parameters only, in their order.

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
from collections.abc import Iterable, Iterator
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

__all__ = ["SharedModel", "share", "model_of", "sparse_positions", "SPARSE_MODULES"]

#: module types whose ``weight`` gets a sparse gradient when built with ``sparse=True``
SPARSE_MODULES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)

#: SharedModels attached in this process, by arena name.
_ATTACHED: weakref.WeakValueDictionary[str, "SharedModel"] = weakref.WeakValueDictionary()


class SharedModel:
    """A module whose parameters are views of one flat float32 buffer in a shmopt arena.

    Attributes: ``module`` (the wrapped ``nn.Module``), ``flat`` (the shared parameters),
    ``flat_grad`` (this process's private gradient buffer, of the dense parameters only),
    ``sparse_params`` (positions of the tables), ``owner`` (True in the creating process, the
    only one that unlinks, until closed).  Calling it calls the module; unknown attributes are
    looked up on the module.  Build it with :func:`share`.
    """

    def __init__(self, module: nn.Module, hold: Attachment, shapes: list[torch.Size],
                 sparse: tuple[int, ...] = ()) -> None:
        self.module = module
        self._hold = hold
        self._shapes = shapes
        self.flat: Tensor = hold.arena.tensor("params")
        self._numel = self.flat.numel()
        self._params: list[nn.Parameter] = list(module.parameters())
        self._sparse = tuple(sorted(set(sparse)))
        #: each parameter's span in flat_grad, None for a table (its gradient stays sparse)
        self._grad_spans: list[tuple[int, int] | None] = []
        n = 0
        for i, p in enumerate(self._params):
            self._grad_spans.append(None if i in self._sparse else (n, n + p.numel()))
            n += 0 if i in self._sparse else p.numel()
        self.flat_grad: Tensor = torch.zeros(n)
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
        """Zero this process's gradient buffer and bind the dense parameters' ``.grad`` to it;
        a table's ``.grad`` is set to None (nothing of its size is zeroed or allocated)."""
        self.flat_grad.zero_()
        for i, p in enumerate(self._params):
            p.grad = self.grad_buffer(i)

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

    @property
    def sparse_params(self) -> tuple[int, ...]:
        """Positions (in ``parameters()``) of the tables: parameters with sparse gradients."""
        return self._sparse

    def grad_buffer(self, i: int) -> Tensor | None:
        """Parameter ``i``'s view of ``flat_grad`` (shaped as it), None for a table."""
        span = self._grad_spans[i]
        return None if span is None else self.flat_grad[span[0]:span[1]].view_as(self._params[i])

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
        return (_attach, (self._hold.handle, skeleton, self._shapes, self._sparse))

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("owner" if self.owner else "attached")
        return f"SharedModel({type(self.module).__name__}, {self.numel} params, {self.name}, {state})"


def _attach(handle: ArenaHandle, skeleton: bytes, shapes: list[torch.Size],
            sparse: tuple[int, ...] = ()) -> SharedModel:
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
        return SharedModel(module, hold, shapes, sparse)
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
def sparse_positions(model: nn.Module, params: list[nn.Parameter],
                     extra: "Iterable[Tensor | str] | Tensor | str" = ()) -> tuple[int, ...]:
    """Positions in ``params`` of the tables: the weights of :data:`SPARSE_MODULES` built with
    ``sparse=True`` and the parameters (or names in ``named_parameters()``) given in ``extra``."""
    index = {id(p): i for i, p in enumerate(params)}
    found = {index[id(m.weight)] for m in model.modules()
             if isinstance(m, SPARSE_MODULES) and m.sparse and id(m.weight) in index}
    names = dict(model.named_parameters())
    for x in [extra] if isinstance(extra, (str, Tensor)) else extra:
        i = index.get(id(names.get(x) if isinstance(x, str) else x))
        if i is None:
            what = repr(x) if isinstance(x, str) else \
                f"a tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ConfigError(f"share(): sparse_params names {what}, which is not a parameter of the model "
                              f"(give its parameters or their names in named_parameters())")
        found.add(i)
    return tuple(sorted(found))


def share(model: "nn.Module | SharedModel", *, sparse_params: "Iterable[Tensor | str]" = ()) -> SharedModel:
    """Move ``model``'s parameters into one new shmopt arena (in place); see the module doc.

    Returns the :class:`SharedModel` (the same one if ``model`` is shared already).  The
    parameters must be float32 on the CPU.  ``sparse_params``: parameters (or their names) with
    sparse gradients besides the ``sparse=True`` embeddings' weights, kept out of the private
    gradient buffer (module doc, "Tables").  Close it (or use ``with``) when done.
    """
    if not isinstance(model, (nn.Module, SharedModel)):
        raise ConfigError(f"share() takes an nn.Module, got {type(model).__name__}")
    existing = model if isinstance(model, SharedModel) else shared_of(model)
    if existing is not None:
        module = existing.module
        wanted = sparse_positions(module, list(module.parameters()), sparse_params)
        missing = set(wanted) - set(existing.sparse_params)
        if missing:
            raise ConfigError(f"share(): the model is shared already, without parameters {sorted(missing)} "
                              f"as tables: pass sparse_params to the first share()")
        return existing
    params = list(model.parameters())
    if not params:
        raise ConfigError("share(): the model has no parameters")
    for p in params:
        if p.dtype != torch.float32 or p.device.type != "cpu" or p.is_sparse:
            raise ConfigError(f"share(): parameters must be dense float32 CPU tensors, got "
                              f"{p.dtype} on {p.device}; convert the model (e.g. .float()) first")
    sparse = sparse_positions(model, params, sparse_params)
    if any(b.is_floating_point() for b in model.buffers()):
        warnings.warn("share(): the model's buffers (e.g. BatchNorm statistics) are not shared, "
                      "each process keeps its own copy", stacklevel=2)
    n = sum(p.numel() for p in params)
    hold = Attachment.create(Layout.build([("params", (n,), np.float32)]))
    try:
        with torch.no_grad():
            bind_params(model, hold.arena.tensor("params"), copy=True)
        return SharedModel(model, hold, [p.shape for p in params], sparse)
    except BaseException:
        hold.close()
        raise
