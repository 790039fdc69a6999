r"""``torch.optim`` optimizers whose whole state lives in shmopt shared memory (the A3C pattern).

:class:`SharedAdam`, :class:`SharedAMSGrad` and :class:`SharedSGD` are ``torch.optim.Optimizer``
subclasses for processes the user starts himself (``torch.multiprocessing``); their state, an
exact global step count and their pickling by handle are described in
:mod:`shmopt.shared.optimizer_base`.  The update math is the shmopt rule (:mod:`shmopt.rules`:
torch's fused Adam kernel, SGD with torch semantics), built from each param group by the rule
itself (``Rule.from_options``) and run on each parameter's slice or, when a group's parameters
are consecutive views of one flat buffer (as after :func:`shmopt.shared.share`), once over the
whole group::

    Adam/AMSGrad (Kingma & Ba 2015; Reddi et al. 2018), t = global step count:
        m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  vhat <- max(vhat, v) | v
        x <- x - lr/(1-b1^t) * m / (sqrt(vhat)/sqrt(1-b2^t) + eps)
    SGD (Polyak 1964 momentum; Sutskever et al. 2013 Nesterov), torch.optim.SGD semantics.

``zero_grad()`` zeroes gradients in place by default (see
:meth:`~shmopt.shared.optimizer_base.SharedOptimizer.zero_grad`), so the classic A3C train loop
(``ensure_shared_grads`` aliasing) works unchanged.  ``state_dict()`` / ``load_state_dict()``
have torch's format and load *into* the shared buffers (:mod:`shmopt.shared.torch_state`).
"""
from __future__ import annotations

from typing import Any

from ..rules import SGD, Adam, AMSGrad
from ..strategies.lr import LrPolicy
from .optimizer_base import SharedOptimizer

__all__ = ["SharedAdam", "SharedAMSGrad", "SharedSGD"]


class SharedAdam(SharedOptimizer):
    """``torch.optim.Adam`` with its state (and an exact step count) in shared memory.

    ``bias_correction=False`` drops both bias corrections; ``lr_policy`` scales the learning
    rate by staleness; ``max_processes`` bounds the processes attached at the same time.
    """

    rule_class = Adam
    _structural = ("amsgrad",)

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 bias_correction: bool = True, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        bias_correction=bias_correction)
        super().__init__(params, defaults, max_processes, lr_policy)


class SharedAMSGrad(SharedAdam):
    """AMSGrad (Reddi, Kale, Kumar, ICLR 2018): :class:`SharedAdam` with ``amsgrad=True``;
    ``bias_correction=False`` gives the APAM rule (Xu et al., arXiv 2002.09095)."""

    rule_class = AMSGrad

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, bias_correction: bool = True,
                 max_processes: int = 64, lr_policy: LrPolicy | str | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, True, bias_correction=bias_correction,
                         max_processes=max_processes, lr_policy=lr_policy)


class SharedSGD(SharedOptimizer):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov, L2 weight decay) with its momentum
    buffer and step count in shared memory."""

    rule_class = SGD

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay)
        super().__init__(params, defaults, max_processes, lr_policy)
