r"""Stochastic gradient descent with momentum, exactly as ``torch.optim.SGD``.

With weight decay :math:`\lambda`, momentum :math:`\mu`, dampening :math:`\tau`,
learning rate :math:`\eta` and the update count :math:`t` (1-based)::

    g  <- g + lambda * x
    b  <- g                                   if t == 1   (torch: fresh buffer = gradient)
    b  <- mu * b + (1 - tau) * g              otherwise
    d  <- g + mu * b    (nesterov)   |   d <- b    (classic)   |   d <- g    (mu == 0)
    x  <- x - eta * d

References: Robbins & Monro (1951) for SGD; Polyak (1964) heavy-ball momentum; the
Nesterov form is the one of Sutskever, Martens, Dahl, Hinton (ICML 2013) as implemented by
PyTorch.  Because ``t`` is the *global* update count, only the update with ``t == 1``
initialises the momentum buffer from the gradient (this is what makes ``dampening != 0``
match torch exactly; with ``dampening == 0`` both forms coincide with a zero buffer).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from shmopt import checks
from shmopt.errors import ConfigError
from shmopt.rules.base import Rule

__all__ = ["SGD"]

_BUF = "momentum_buffer"


@dataclass(frozen=True)
class SGD(Rule):
    """SGD with optional (Nesterov) momentum, dampening and L2 weight decay (torch semantics).

    State: ``("momentum_buffer",)`` when ``momentum > 0``, else ``()``.
    """

    name: ClassVar[str] = "sgd"

    lr: float = 0.01
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "lr", checks.number("lr", self.lr, gt=0))
        set_(self, "momentum", checks.number("momentum", self.momentum, ge=0))
        set_(self, "dampening", checks.number("dampening", self.dampening, ge=0))
        set_(self, "weight_decay", checks.number("weight_decay", self.weight_decay, ge=0))
        checks.flag("nesterov", self.nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ConfigError(
                f"invalid nesterov=True with momentum={self.momentum!r}, dampening={self.dampening!r}: "
                "nesterov requires momentum > 0 and dampening == 0")

    @property
    def state_names(self) -> tuple[str, ...]:
        return (_BUF,) if self.momentum != 0 else ()

    def _apply(self, params: Tensor, grad: Tensor, state: Mapping[str, Tensor], step: int,
               lr: float) -> None:
        g = self._decayed(params, grad)
        momentum = self.momentum
        if momentum != 0:
            buf = state[_BUF]
            if step == 1:
                buf.copy_(g)
            else:
                buf.mul_(momentum).add_(g, alpha=1 - self.dampening)
            if self.nesterov:
                if g is grad:
                    g = torch.add(grad, buf, alpha=momentum, out=self._scratch("g", grad))
                else:
                    g.add_(buf, alpha=momentum)
            else:
                g = buf
        params.add_(g, alpha=-lr)
