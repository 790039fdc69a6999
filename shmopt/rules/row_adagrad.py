r"""Adagrad on the touched rows of a table: element-wise (torch.optim.Adagrad) and row-wise.

Element-wise, :class:`RowAdagrad`, exactly ``torch.optim.Adagrad`` with a sparse gradient
(Duchi, Hazan, Singer, JMLR 2011).  For each distinct touched row ``i`` (summed gradient
``G_i``), ``t`` the 1-based global step::

    S[i]  <- S[i] + G_i^2                                  S = initial_accumulator_value at start
    W[i]  <- W[i] - lr / (1 + (t - 1) lr_decay) * G_i / (sqrt(S[i]) + eps)

Weight decay is refused, as torch refuses it with sparse gradients.

Row-wise, :class:`RowwiseAdagrad` (PyTorch-BigGraph's row Adagrad, Lerer et al., SysML 2019;
FBGEMM's EXACT_ROWWISE_ADAGRAD): one accumulator per row, O(rows) state instead of O(rows x dim)::

    s_i  <- s_i + mean_j G_ij^2
    W[i] <- W[i] - lr * G_i / (sqrt(s_i) + eps)

Hogwild races.  Both rules read the accumulator of the touched rows, add this step's increment
to that *local* copy and use it in the denominator, then add the increment to the shared
accumulator (``index_add_``) instead of writing the local copy back.  A writer racing on the
same row can make the shared value lag (an increment lost in an overlapping read-modify-write)
but never lowers *this* step's denominator below "old value + own increment": the step is
never larger than it would be alone, and no increment overwrites another's whole history.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from shmopt import checks
from shmopt.errors import ConfigError
from shmopt.rules.rows import RowRule

__all__ = ["RowAdagrad", "RowwiseAdagrad"]


def _check_common(rule: Any) -> None:
    set_ = object.__setattr__
    set_(rule, "lr", checks.number("lr", rule.lr, ge=0))
    set_(rule, "eps", checks.number("eps", rule.eps, ge=0))
    set_(rule, "initial_accumulator_value",
         checks.number("initial_accumulator_value", rule.initial_accumulator_value, ge=0))


@dataclass(frozen=True)
class RowAdagrad(RowRule):
    """Element-wise Adagrad on touched rows (torch semantics); state ``sum`` of shape (rows, dim)."""

    name: ClassVar[str] = "row_adagrad"

    lr: float = 0.01
    lr_decay: float = 0.0
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "lr_decay", checks.number("lr_decay", self.lr_decay, ge=0))

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if options.get("weight_decay"):
            raise ConfigError(f"invalid weight_decay={options['weight_decay']!r} with sparse gradients: "
                              "torch.optim.Adagrad refuses it too; use weight_decay=0")

    def state_specs(self, rows: int, dim: int) -> dict[str, tuple[int, ...]]:
        return {"sum": (rows, dim)}

    def init(self, state: Mapping[str, Tensor]) -> None:
        state["sum"].fill_(self.initial_accumulator_value)

    def _apply(self, table: Tensor, indices: Tensor, values: Tensor, state: Mapping[str, Tensor],
               step: int, lr: float) -> None:
        acc = state["sum"]
        inc = values * values
        local = acc.index_select(0, indices).add_(inc)        # this step's S[i], race-proof
        acc.index_add_(0, indices, inc)
        clr = lr / (1 + (step - 1) * self.lr_decay)
        table.index_add_(0, indices, torch.div(values, local.sqrt_().add_(self.eps)).mul_(-clr))


@dataclass(frozen=True)
class RowwiseAdagrad(RowRule):
    """Row-wise Adagrad (PBG, FBGEMM EXACT_ROWWISE_ADAGRAD); state ``sum`` of shape (rows,)."""

    name: ClassVar[str] = "rowwise_adagrad"

    lr: float = 0.01
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0

    def __post_init__(self) -> None:
        _check_common(self)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        for key in ("weight_decay", "lr_decay"):
            if options.get(key):
                raise ConfigError(f"invalid {key}={options[key]!r}: row-wise Adagrad has none; use {key}=0")

    def state_specs(self, rows: int, dim: int) -> dict[str, tuple[int, ...]]:
        return {"sum": (rows,)}

    def init(self, state: Mapping[str, Tensor]) -> None:
        state["sum"].fill_(self.initial_accumulator_value)

    def _apply(self, table: Tensor, indices: Tensor, values: Tensor, state: Mapping[str, Tensor],
               step: int, lr: float) -> None:
        acc = state["sum"]
        inc = values.pow(2).mean(dim=1)
        local = acc.index_select(0, indices).add_(inc)        # this step's s_i, race-proof
        acc.index_add_(0, indices, inc)
        denom = local.sqrt_().add_(self.eps).unsqueeze(1)
        table.index_add_(0, indices, torch.div(values, denom).mul_(-lr))
