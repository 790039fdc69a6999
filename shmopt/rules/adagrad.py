r"""Adagrad over flat tensors, exactly ``torch.optim.Adagrad`` with dense gradients.

Duchi, Hazan, Singer, "Adaptive subgradient methods", JMLR 2011.  With weight decay ``lambda``
(L2, added to the gradient), ``t`` the 1-based global update count::

    g <- g + lambda * x
    S <- S + g^2                                        S = initial_accumulator_value at start
    x <- x - lr / (1 + (t - 1) lr_decay) * g / (sqrt(S) + eps)

Sparse gradients: :class:`shmopt.rules.row_adagrad.RowAdagrad` (the same state, touched rows).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from shmopt import checks
from shmopt.rules.base import Rule

__all__ = ["Adagrad"]


@dataclass(frozen=True)
class Adagrad(Rule):
    """Adagrad (torch semantics); state ``("sum",)``, initialised to ``initial_accumulator_value``."""

    name: ClassVar[str] = "adagrad"

    lr: float = 0.01
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "lr", checks.number("lr", self.lr, ge=0))
        for key in ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            set_(self, key, checks.number(key, getattr(self, key), ge=0))

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("sum",)

    def init(self, state: Mapping[str, Tensor]) -> None:
        state["sum"].fill_(self.initial_accumulator_value)

    def _apply(self, params: Tensor, grad: Tensor, state: Mapping[str, Tensor], step: int,
               lr: float) -> None:
        g = self._decayed(params, grad)
        acc = state["sum"]
        acc.addcmul_(g, g, value=1)
        std = torch.sqrt(acc, out=self._scratch("std", acc)).add_(self.eps)
        params.addcdiv_(g, std, value=-lr / (1 + (step - 1) * self.lr_decay))
