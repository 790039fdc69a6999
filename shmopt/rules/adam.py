r"""Adam, AMSGrad and the bias-correction-free APAM rule.

With gradient ``g``, weight decay ``lambda`` (L2, added to the gradient as torch.optim.Adam
does), betas ``b1, b2``, ``eps``, learning rate ``lr`` and the 1-based update count ``t``::

    g     <- g + lambda * x
    m     <- b1 * m + (1 - b1) * g
    v     <- b2 * v + (1 - b2) * g^2
    vhat  <- max(vhat, v)                              (amsgrad)  |  vhat = v  (adam)
    x     <- x - lr / (1 - b1^t) * m / (sqrt(vhat) / sqrt(1 - b2^t) + eps)

``bias_correction=True`` is exactly ``torch.optim.Adam(amsgrad=...)`` (Kingma & Ba, ICLR
2015; AMSGrad: Reddi, Kale, Kumar, "On the Convergence of Adam and Beyond", ICLR 2018).

``bias_correction=False`` drops both corrections, which with ``amsgrad=True`` is the
paper-exact APAM update (Xu, Sutcliffe, Xu, Chen, "Asynchronous parallel adaptive
stochastic gradient methods", arXiv 2002.09095, Algorithm 1)::

    m <- b1 m + (1-b1) g;   v <- b2 v + (1-b2) g^2;   vhat <- max(vhat, v);
    x <- x - lr * m / (sqrt(vhat) + eps)

``eps = 0`` is accepted; a coordinate whose ``vhat`` is 0 then gives ``0/0 = nan``.

Implementation: torch's fused CPU kernel ``torch._fused_adam_`` (private API, torch >= 2.4)
when available, else a hand-written in-place sequence of torch ops mirroring torch's
single-tensor Adam.  The kernel takes the step from a float32 scalar tensor; for
``bias_correction=False`` it is given the step ``2**62`` (exact in float32 and int64), for
which ``1 - b**step == 1.0`` exactly in double precision for every ``b`` in ``[0, 1)``, so
both corrections are exactly 1.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from shmopt import checks
from shmopt.errors import ConfigError
from shmopt.rules.base import Rule

__all__ = ["Adam", "AMSGrad", "fused_adam_available", "NO_BIAS_CORRECTION_STEP"]

#: Step fed to the fused kernel when ``bias_correction=False``: ``b**(2**62)`` is below
#: ``2**-54`` for every double ``b < 1``, so ``1 - b**step`` rounds to exactly 1.0.
NO_BIAS_CORRECTION_STEP: int = 2**62


@functools.cache
def fused_adam_available(device_type: str = "cpu") -> bool:
    """Whether ``torch._fused_adam_`` works on float32 tensors of ``device_type`` here (one tiny
    probe per device type, cached).

    The probe runs both the Adam and the AMSGrad variants on 3-element tensors and checks
    the result; any exception (missing op, no CPU kernel, changed signature) means False.
    """
    fn = getattr(torch, "_fused_adam_", None)
    if fn is None:
        return False
    try:
        with torch.no_grad():
            for amsgrad in (False, True):
                kw = {"dtype": torch.float32, "device": device_type}
                p, g = torch.ones(3, **kw), torch.ones(3, **kw)
                m, v = torch.zeros(3, **kw), torch.zeros(3, **kw)
                vmax = [torch.zeros(3, **kw)] if amsgrad else []
                step = torch.tensor(1.0, **kw)
                fn([p], [g], [m], [v], vmax, [step], lr=0.5, beta1=0.9, beta2=0.999,
                   weight_decay=0.0, eps=0.0, amsgrad=amsgrad, maximize=False,
                   grad_scale=None, found_inf=None)
                # step 1: m = 0.1, v = 0.001; corrected update = lr * 1 / 1 -> p = 0.5.
                if not torch.allclose(p, torch.full_like(p, 0.5), rtol=1e-5, atol=1e-6) \
                        or float(step) != 1.0:
                    return False
    except Exception:  # noqa: BLE001 - any failure of a private API means "not available"
        return False
    return True


@dataclass(frozen=True)
class Adam(Rule):
    """Adam (and AMSGrad with ``amsgrad=True``); see the module docstring for the equations.

    State: ``("m", "v")``, plus ``"vmax"`` when ``amsgrad``.  ``fused``: None = use the fused
    CPU kernel when available, True = require it (ConfigError if missing), False = never.
    """

    name: ClassVar[str] = "adam"

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    bias_correction: bool = True
    fused: bool | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "lr", checks.number("lr", self.lr, gt=0))
        set_(self, "betas", checks.pair("betas", self.betas, ge=0, lt=1))
        set_(self, "eps", checks.number("eps", self.eps, ge=0))
        set_(self, "weight_decay", checks.number("weight_decay", self.weight_decay, ge=0))
        checks.flag("amsgrad", self.amsgrad)
        checks.flag("bias_correction", self.bias_correction)
        if self.fused is not None and not isinstance(self.fused, bool):
            raise ConfigError(f"invalid fused={self.fused!r}: must be None (auto), True or False")
        if self.fused is True and not fused_adam_available():
            raise ConfigError("invalid fused=True: torch._fused_adam_ is not available for CPU float32 "
                              "in this torch build; use fused=None (auto) or False")

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("m", "v", "vmax") if self.amsgrad else ("m", "v")

    @classmethod
    def check_options(cls, options: Mapping[str, object]) -> None:
        if options.get("momentum"):
            raise ConfigError(f"invalid momentum={options['momentum']}: momentum belongs to rule sgd, "
                              f"not {cls.name}")

    def _apply(self, params: Tensor, grad: Tensor, state: Mapping[str, Tensor], step: int,
               lr: float) -> None:
        if self.fused is not False and fused_adam_available("cpu" if params.is_cpu else params.device.type):
            self._update_fused(params, grad, state, step, lr)     # the kernel adds the weight decay
        else:
            self._update_ops(params, grad, state, step, lr)

    def _update_fused(self, params: Tensor, grad: Tensor, state: Mapping[str, Tensor], step: int,
                      lr: float) -> None:
        cache = self._cache()
        key = f"step{params.get_device()}"          # the kernel wants the step on the params' device
        step_t = cache.get(key)
        if step_t is None:
            step_t = cache[key] = torch.zeros((), dtype=torch.float32, device=params.device)
        step_t.fill_(step if self.bias_correction else NO_BIAS_CORRECTION_STEP)
        b1, b2 = self.betas
        torch._fused_adam_(
            [params], [grad], [state["m"]], [state["v"]],
            [state["vmax"]] if self.amsgrad else [], [step_t],
            lr=lr, beta1=b1, beta2=b2, weight_decay=self.weight_decay, eps=self.eps,
            amsgrad=self.amsgrad, maximize=False, grad_scale=None, found_inf=None)

    def _update_ops(self, params: Tensor, grad: Tensor, state: Mapping[str, Tensor], step: int,
                    lr: float) -> None:
        b1, b2 = self.betas
        m, v = state["m"], state["v"]
        g = self._decayed(params, grad)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        if self.amsgrad:
            vhat = state["vmax"]
            torch.maximum(vhat, v, out=vhat)
        else:
            vhat = v
        denom = torch.sqrt(vhat, out=self._scratch("denom", vhat))
        if self.bias_correction:
            step_size = lr / (1 - b1**step)
            denom.div_((1 - b2**step) ** 0.5)
        else:
            step_size = lr
        denom.add_(self.eps)
        params.addcdiv_(m, denom, value=-step_size)


@dataclass(frozen=True)
class AMSGrad(Adam):
    """AMSGrad (Reddi, Kale, Kumar 2018): :class:`Adam` with ``amsgrad=True``.

    ``AMSGrad(bias_correction=False)`` is the APAM rule (Xu et al., arXiv 2002.09095).
    """

    name: ClassVar[str] = "amsgrad"

    amsgrad: bool = True

    def __post_init__(self) -> None:
        if self.amsgrad is not True:
            raise ConfigError(f"invalid amsgrad={self.amsgrad!r}: AMSGrad requires amsgrad=True "
                              "(use Adam for amsgrad=False)")
        super().__post_init__()
