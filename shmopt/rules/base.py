"""The :class:`Rule` contract: an in-place update rule over flat float32 tensors.

A rule maps one (possibly stale) gradient ``g`` to one update of the parameters ``x``
and of its state buffers ``s_1, ..., s_k``::

    (x, s) <- rule(x, g, s, step, lr)

``x``, ``g`` and every ``s_i`` are 1-D contiguous float32 tensors of the same ``numel``;
in the engine they are views into multiprocessing shared memory, so a rule only ever
writes *into* them (never rebinds or reallocates them).  ``step`` is the 1-based global
count of the update being applied (it drives bias corrections and "first step" logic).

This module is pure math: it imports nothing from the engine.
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = ["Rule", "RuleOptions"]

# Name of the per-instance attribute that holds lazily allocated scratch tensors.  It is
# not a dataclass field (so it is not part of __init__/__eq__/__repr__/hyper()) and it is
# dropped from the pickled state (so a rule sent to a spawned worker stays tiny).
_CACHE_ATTR = "_scratch_cache"


class RuleOptions:
    """What every rule, dense (:class:`Rule`) or on rows (``RowRule``), does the same way: build
    itself from a flat mapping of options and write its initial state."""

    state_names: tuple[str, ...]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Any:
        """Build the rule from a flat mapping of options (a run's configuration, a torch.optim
        param group): the keys that are hyper-parameters of this rule are taken, every other key
        is ignored, and :meth:`check_options` may refuse one that belongs to another rule."""
        cls.check_options(options)
        accepted = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse options this rule cannot honour (ConfigError); nothing by default."""
        return None

    def init(self, state: Mapping[str, Tensor]) -> None:
        """Write the initial state (zeros) in place into the given buffers."""
        for key in self.state_names:
            state[key].zero_()


class Rule(RuleOptions, abc.ABC):
    """Abstract base class of the update rules (concrete rules are small dataclasses).

    Subclasses define ``name`` (a class constant), the dataclass fields ``lr`` (the default
    learning rate) and ``weight_decay``, :attr:`state_names` and :meth:`_apply` (the rule's
    own arithmetic).  :meth:`update` (the step check, the lr override, then :meth:`_apply`),
    :meth:`init` and :meth:`hyper` have generic implementations.  A rule instance caches
    scratch tensors lazily, so one instance must not be used from several threads at once
    (one instance per process, as the engine does, is fine).
    """

    name: ClassVar[str]
    lr: float
    weight_decay: float

    # ------------------------------------------------------------------ contract
    @property
    @abc.abstractmethod
    def state_names(self) -> tuple[str, ...]:
        """Names of the flat float32 state buffers (each of the same numel as the params)."""

    @torch.no_grad()
    def update(self, params: Tensor, grad: Tensor, state: Mapping[str, Tensor], step: int,
               lr: float | None = None) -> None:
        """Apply one update in place to ``params`` and the ``state`` buffers.

        ``step`` is the 1-based global update count of *this* update; ``lr``, when given,
        overrides :attr:`lr` for this call only.  ``grad`` is never modified.
        """
        if step < 1:
            raise step_error(step)
        self._apply(params, grad, state, step, self.lr if lr is None else float(lr))

    @abc.abstractmethod
    def _apply(self, params: Tensor, grad: Tensor, state: Mapping[str, Tensor], step: int,
               lr: float) -> None:
        """The rule's arithmetic for one update (``step`` >= 1 checked, ``lr`` resolved); called
        under ``torch.no_grad()``."""

    def _decayed(self, params: Tensor, grad: Tensor) -> Tensor:
        """The gradient with the L2 weight-decay term, ``grad + weight_decay * params``, in a
        cached scratch tensor; ``grad`` itself when there is no weight decay."""
        if self.weight_decay == 0:
            return grad
        return torch.add(grad, params, alpha=self.weight_decay, out=self._scratch("g", grad))

    def hyper(self) -> dict[str, object]:
        """The hyper-parameters as a JSON-able dict; ``make_rule(rule.name, **rule.hyper())``
        rebuilds an equal rule."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.init:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # ------------------------------------------------------------------ helpers
    def _cache(self) -> dict[str, Tensor]:
        """The per-instance dict of cached tensors (created on first use, never pickled)."""
        cache: dict[str, Tensor] | None = self.__dict__.get(_CACHE_ATTR)
        if cache is None:
            cache = {}
            # object.__setattr__ also works on frozen dataclasses.
            object.__setattr__(self, _CACHE_ATTR, cache)
        return cache

    def _scratch(self, key: str, like: Tensor) -> Tensor:
        """A cached scratch tensor with the numel/dtype/device of ``like`` (allocated once)."""
        cache = self._cache()
        buf = cache.get(key)
        if buf is None or buf.numel() != like.numel() or buf.dtype != like.dtype \
                or buf.device != like.device:
            buf = torch.empty(like.numel(), dtype=like.dtype, device=like.device)
            cache[key] = buf
        return buf

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop(_CACHE_ATTR, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


# ---------------------------------------------------------------------- errors
def step_error(step: object) -> ValueError:
    return ValueError(f"invalid step={step!r}: must be the 1-based global update count (>= 1)")
