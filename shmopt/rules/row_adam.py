r"""Lazy Adam / AMSGrad on the touched rows (torch.optim.SparseAdam) and row-wise AMSGrad.

:class:`LazyAdam`: for each distinct touched row ``i`` (summed gradient ``G_i``), ``t`` the 1-based
*global* step, exactly ``torch.optim.SparseAdam`` when ``amsgrad=False``::

    m[i]    <- m[i] + (1 - b1) (G_i - m[i])
    v[i]    <- v[i] + (1 - b2) (G_i^2 - v[i])
    vhat[i] <- max(vhat[i], v[i])          (amsgrad)   |   vhat[i] = v[i]   (adam)
    W[i]    <- W[i] - c_t * m[i] / (sqrt(vhat[i]) + eps)
    c_t = lr sqrt(1 - b2^t) / (1 - b1^t)   (bias_correction, SparseAdam's form)   |   lr

``amsgrad=True`` is the lazy AMSGrad for APAM; with ``bias_correction=False`` it is the
paper-exact APAM update (Xu et al., arXiv 2002.09095) on the touched rows.  Laziness against
the dense rule: an untouched row's ``m``, ``v`` do not decay (the dense rule shrinks them by
``b1``, ``b2`` at every step and moves the row with its old momentum) and the row does not move;
the bias correction still uses the global ``t``, so a row seen rarely gets the correction of a
late step (as SparseAdam).  Note SparseAdam's ``eps`` is added to ``sqrt(v)`` itself, not to
``sqrt(v / (1 - b2^t))`` as in dense Adam.

:class:`RowwiseAMSGrad` (FBGEMM's PARTIAL_ROWWISE_ADAM idea, with the AMSGrad max): one ``v``
and one ``vhat`` per row, O(rows) memory; ``m`` element-wise on touched rows, or no ``m`` at
all when ``b1 = 0`` (then ``m = G`` and all the state is O(rows))::

    m[i]    <- b1 m[i] + (1 - b1) G_i
    v_i     <- b2 v_i + (1 - b2) mean_j G_ij^2;    vhat_i <- max(vhat_i, v_i)
    W[i]    <- W[i] - c_t * m[i] / (sqrt(vhat_i) + eps)

Hogwild races: as in :mod:`shmopt.rules.row_adagrad`, ``m`` and ``v`` are read once, the new
values computed locally and used for this step, and only the increments ``(1-b)(x - old)``
added to the shared rows (``index_add_``); ``vhat`` is re-read just before writing
``max(re-read, local)``, so a racing writer's larger value is lost only inside that window.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from shmopt import checks
from shmopt.errors import ConfigError
from shmopt.rules.rows import RowRule

__all__ = ["LazyAdam", "RowwiseAMSGrad"]


def _validate(rule: Any) -> None:
    set_ = object.__setattr__
    set_(rule, "lr", checks.number("lr", rule.lr, ge=0))
    set_(rule, "betas", checks.pair("betas", rule.betas, ge=0, lt=1))
    set_(rule, "eps", checks.number("eps", rule.eps, ge=0))
    checks.flag("bias_correction", rule.bias_correction)


def _refuse_weight_decay(options: Mapping[str, Any]) -> None:
    if options.get("weight_decay"):
        raise ConfigError(f"invalid weight_decay={options['weight_decay']!r} with sparse gradients: "
                          "torch.optim.SparseAdam has none; use weight_decay=0")


def _step_size(rule: Any, lr: float, step: int) -> float:
    if not rule.bias_correction:
        return lr
    b1, b2 = rule.betas
    return lr * math.sqrt(1 - b2**step) / (1 - b1**step)


def _moment(buf: Tensor, indices: Tensor, target: Tensor, beta: float) -> Tensor:
    """``buf[i] += (1-beta)(target - buf[i])`` on the rows; returns the new rows (local copy)."""
    old = buf.index_select(0, indices)
    inc = target.sub(old).mul_(1 - beta)
    buf.index_add_(0, indices, inc)
    return inc.add_(old)


def _running_max(vhat: Tensor, indices: Tensor, v: Tensor) -> Tensor:
    local = torch.maximum(vhat.index_select(0, indices), v)
    vhat.index_copy_(0, indices, torch.maximum(vhat.index_select(0, indices), local))
    return local


@dataclass(frozen=True)
class _AdamRows(RowRule):
    """The options both Adam-style row rules take (validated), and their refusal of weight decay."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    bias_correction: bool = True

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        _refuse_weight_decay(options)


@dataclass(frozen=True)
class LazyAdam(_AdamRows):
    """SparseAdam (and lazy AMSGrad); state ``m``, ``v`` (+ ``vmax``) of shape (rows, dim)."""

    name: ClassVar[str] = "lazy_adam"

    amsgrad: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.flag("amsgrad", self.amsgrad)

    @property
    def label(self) -> str:
        return "lazy_amsgrad" if self.amsgrad else self.name

    def state_specs(self, rows: int, dim: int) -> dict[str, tuple[int, ...]]:
        names = ("m", "v", "vmax") if self.amsgrad else ("m", "v")
        return {k: (rows, dim) for k in names}

    def _apply(self, table: Tensor, indices: Tensor, values: Tensor, state: Mapping[str, Tensor],
               step: int, lr: float) -> None:
        b1, b2 = self.betas
        m = _moment(state["m"], indices, values, b1)
        v = _moment(state["v"], indices, values * values, b2)
        if self.amsgrad:
            v = _running_max(state["vmax"], indices, v)
        denom = v.sqrt_().add_(self.eps)
        table.index_add_(0, indices, m.div_(denom).mul_(-_step_size(self, lr, step)))


@dataclass(frozen=True)
class RowwiseAMSGrad(_AdamRows):
    """Row-wise AMSGrad: ``v``, ``vmax`` of shape (rows,); ``m`` (rows, dim) unless ``betas[0] == 0``."""

    name: ClassVar[str] = "rowwise_amsgrad"

    def state_specs(self, rows: int, dim: int) -> dict[str, tuple[int, ...]]:
        specs: dict[str, tuple[int, ...]] = {"m": (rows, dim)} if self.betas[0] > 0 else {}
        return {**specs, "v": (rows,), "vmax": (rows,)}

    def _apply(self, table: Tensor, indices: Tensor, values: Tensor, state: Mapping[str, Tensor],
               step: int, lr: float) -> None:
        b1, b2 = self.betas
        m = _moment(state["m"], indices, values, b1) if b1 > 0 else values.clone()
        v = _moment(state["v"], indices, values.pow(2).mean(dim=1), b2)
        v = _running_max(state["vmax"], indices, v)
        denom = v.sqrt_().add_(self.eps).unsqueeze(1)
        table.index_add_(0, indices, m.div_(denom).mul_(-_step_size(self, lr, step)))
