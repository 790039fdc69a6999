"""Keeping a shared module shared: the conversion guard and the by-handle reducer.

``nn.Module.to/double/half/cuda/share_memory/to_empty`` all go through ``module._apply(fn)``.
:func:`set_guards` puts an :class:`ApplyGuard` in every submodule's ``__dict__`` (an instance
attribute hides the class method): conversions that would move the parameters out of the
arena raise :class:`~shmopt.shared.SharingError`, ``share_memory()`` warns and does nothing.

A shared module handed to ``torch.multiprocessing`` (Process args, queues) is reduced by
:func:`reduce_module`: it travels by handle like its SharedModel (torch would otherwise copy its
parameters into a new segment, un-sharing them in this process too).
"""
from __future__ import annotations

import pickle
import warnings
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
from torch import nn

from .errors import SharingError

#: a SharedModel (typed loosely: this module sits below model.py, which imports it)
SharedModel = Any

__all__ = ["ApplyGuard", "set_guards", "shared_of", "register_reducer"]


class ApplyGuard:
    """Instance attribute ``module._apply``: refuses conversions that would un-share.

    The guard runs ``fn`` on a one-element float32 probe first: returned unchanged -> harmless
    (``.cpu()``, ``.float()``, ``.to("cpu")``), passed on; moved in place -> ``share_memory()``,
    skipped with a warning; anything else -> :class:`SharingError`.  Pickled or deep-copied
    modules get an inert guard (plain ``_apply``).  The guard holds the SharedModel: it lives as
    long as its module, so ``share(model)`` may be called for its effect alone.
    """

    def __init__(self, module: nn.Module, shared: SharedModel | None) -> None:
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
        return (ApplyGuard, (self.module, None))

    def __deepcopy__(self, memo: dict) -> "ApplyGuard":
        return ApplyGuard(memo.get(id(self.module), self.module), None)


def set_guards(module: nn.Module, shared: SharedModel | None) -> None:
    """Guard every submodule of ``module`` for ``shared`` (None: remove the guards)."""
    for m in module.modules():
        if shared is None:
            m.__dict__.pop("_apply", None)
        else:
            m.__dict__["_apply"] = ApplyGuard(m, shared)


def shared_of(module: object) -> SharedModel | None:
    """The open SharedModel guarding ``module`` (it or one of its parents was shared), or None."""
    guard = getattr(module, "__dict__", {}).get("_apply")
    if isinstance(guard, ApplyGuard) and guard.shared is not None and not guard.shared.closed:
        return guard.shared
    return None


def reduce_module(module: nn.Module) -> tuple:
    """ForkingPickler reducer registered for the classes of shared modules (see the module
    docstring); modules that are not shared pickle as usual."""
    shared = shared_of(module)
    if shared is not None:
        if shared.module is module:
            return (_module_of, (shared,))
        if any(True for _ in module.parameters()):
            raise SharingError(f"a submodule ({type(module).__name__}) of a shared model cannot be sent to "
                               f"another process on its own (torch would move the whole shared buffer "
                               f"out of the arena): send the SharedModel or its top-level module")
    return module.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


def _module_of(shared: SharedModel) -> nn.Module:
    return shared.module


def register_reducer(cls: type) -> None:
    """Make ``torch.multiprocessing`` pickle modules of class ``cls`` with :func:`reduce_module`
    (unless another reducer was registered for it)."""
    if ForkingPickler._extra_reducers.get(cls, reduce_module) is reduce_module:
        ForkingPickler.register(cls, reduce_module)
