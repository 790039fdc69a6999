r"""``torch.optim`` optimizers whose whole state lives in shmopt shared memory (the A3C pattern).

:class:`SharedAdam`, :class:`SharedAMSGrad`, :class:`SharedSGD`, :class:`SharedAdagrad`,
:class:`SharedSparseAdam` (``amsgrad=True``: lazy AMSGrad), :class:`SharedRowwiseAdagrad` and
:class:`SharedRowwiseAMSGrad` are ``torch.optim.Optimizer`` subclasses
for processes the user starts himself (``torch.multiprocessing``); their state, an
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
    Adagrad (Duchi et al. 2011), SparseAdam / lazy AMSGrad, row-wise Adagrad (PyTorch-BigGraph)
    and row-wise AMSGrad: below.

Sparse gradients (``nn.Embedding(sparse=True)``) update the touched rows only, by the row rules
of :mod:`shmopt.rules.rows` (SGD without momentum, Adagrad, SparseAdam / lazy AMSGrad, row-wise
Adagrad, row-wise AMSGrad: every row rule has its optimizer);
SharedAdam/SharedAMSGrad refuse them as torch.optim.Adam does.

``maximize=True`` ascends (the gradient negated before the rule, as torch.optim does).
``zero_grad()`` zeroes gradients in place by default (see
:meth:`~shmopt.shared.optimizer_base.SharedOptimizer.zero_grad`), so the classic A3C train loop
(``ensure_shared_grads`` aliasing) works unchanged.  ``state_dict()`` / ``load_state_dict()``
have torch's format and load *into* the shared buffers (:mod:`shmopt.shared.torch_state`).
"""
from __future__ import annotations

from typing import Any

from ..rules import (
    SGD,
    Adagrad,
    Adam,
    AMSGrad,
    LazyAdam,
    RowAdagrad,
    RowSGD,
    RowwiseAdagrad,
    RowwiseAMSGrad,
)
from ..strategies.lr import LrPolicy
from .optimizer_base import SharedOptimizer

__all__ = ["SharedAdam", "SharedAMSGrad", "SharedSGD", "SharedAdagrad", "SharedSparseAdam",
           "SharedRowwiseAdagrad", "SharedRowwiseAMSGrad"]


class SharedAdam(SharedOptimizer):
    """``torch.optim.Adam`` with its state (and an exact step count) in shared memory.

    ``bias_correction=False`` drops both bias corrections; ``lr_policy`` scales the learning
    rate by staleness; ``max_processes`` bounds the processes attached at the same time.
    """

    rule_class = Adam
    _structural = ("amsgrad",)
    _sparse_refusal = ("SharedAdam does not support sparse gradients (torch.optim.Adam neither): use "
                       "SharedSparseAdam for the sparse parameters")

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 bias_correction: bool = True, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None, maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        bias_correction=bias_correction, maximize=maximize)
        super().__init__(params, defaults, max_processes, lr_policy)


class SharedAMSGrad(SharedAdam):
    """AMSGrad (Reddi, Kale, Kumar, ICLR 2018): :class:`SharedAdam` with ``amsgrad=True``;
    ``bias_correction=False`` gives the APAM rule (Xu et al., arXiv 2002.09095)."""

    rule_class = AMSGrad

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, bias_correction: bool = True,
                 max_processes: int = 64, lr_policy: LrPolicy | str | None = None,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, True, bias_correction=bias_correction,
                         max_processes=max_processes, lr_policy=lr_policy, maximize=maximize)


class SharedSGD(SharedOptimizer):
    """``torch.optim.SGD`` (momentum, dampening, Nesterov, L2 weight decay) with its momentum
    buffer and step count in shared memory.

    Sparse gradients: plain SGD on the touched rows (:class:`~shmopt.rules.RowSGD`); momentum is
    refused with them (torch keeps a sparse momentum buffer growing to every row touched), and
    weight decay acts on the touched rows only (torch decays every row, densifying the gradient)."""

    rule_class = SGD
    row_class = RowSGD

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None, maximize: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, max_processes, lr_policy)


class SharedAdagrad(SharedOptimizer):
    """``torch.optim.Adagrad`` (lr_decay, weight decay, initial_accumulator_value, eps) with its
    ``sum`` and step count in shared memory; dense and sparse gradients, as torch (a sparse one
    updates the touched rows, :class:`~shmopt.rules.RowAdagrad`; weight decay refused with it)::

        S <- S + g^2;   x <- x - lr / (1 + (t-1) lr_decay) * g / (sqrt(S) + eps)
    """

    rule_class = Adagrad
    row_class = RowAdagrad

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None, maximize: bool = False) -> None:
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        super().__init__(params, defaults, max_processes, lr_policy)


class SharedSparseAdam(SharedOptimizer):
    """``torch.optim.SparseAdam``: lazy Adam on the touched rows (:class:`~shmopt.rules.LazyAdam`),
    sparse gradients only, as torch; ``exp_avg``, ``exp_avg_sq`` and the step count shared.
    ``amsgrad=True`` (named as in ``torch.optim.Adam``) also keeps the running max
    ``max_exp_avg_sq`` in shared memory: lazy AMSGrad.  ``bias_correction=False`` drops
    ``c_t``'s corrections (with ``amsgrad``: APAM on the touched rows)::

        m[i] <- b1 m[i] + (1-b1) g_i;  v[i] <- b2 v[i] + (1-b2) g_i^2   (touched rows i)
        vhat[i] <- max(vhat[i], v[i])  (amsgrad)  |  vhat[i] = v[i]
        x[i] <- x[i] - lr sqrt(1-b2^t) / (1-b1^t) * m[i] / (sqrt(vhat[i]) + eps)
    """

    rule_class = None
    row_class = LazyAdam
    _dense_rows = False
    _structural = ("amsgrad",)
    _dense_refusal = ("SharedSparseAdam does not support dense gradients (torch.optim.SparseAdam "
                      "neither): use SharedAdam for the dense parameters")

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, amsgrad: bool = False, bias_correction: bool = True,
                 max_processes: int = 64, lr_policy: LrPolicy | str | None = None,
                 maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, amsgrad=amsgrad, bias_correction=bias_correction,
                        maximize=maximize)
        super().__init__(params, defaults, max_processes, lr_policy)


class SharedRowwiseAdagrad(SharedOptimizer):
    """Row-wise Adagrad (PyTorch-BigGraph; FBGEMM EXACT_ROWWISE_ADAGRAD), one accumulator per row
    of each parameter (its first dimension; a 1-D parameter is one row), ``sum`` in shared memory,
    O(rows) state (:class:`~shmopt.rules.RowwiseAdagrad`; race-safe local copies)::

        s_i <- s_i + mean_j g_ij^2;   x[i] <- x[i] - lr * g_i / (sqrt(s_i) + eps)

    A sparse gradient updates the touched rows; a dense one every row.
    """

    rule_class = None
    row_class = RowwiseAdagrad

    def __init__(self, params: Any, lr: float = 1e-2, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0, *, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None, maximize: bool = False) -> None:
        defaults = dict(lr=lr, eps=eps, initial_accumulator_value=initial_accumulator_value,
                        maximize=maximize)
        super().__init__(params, defaults, max_processes, lr_policy)


class SharedRowwiseAMSGrad(SharedOptimizer):
    """Row-wise AMSGrad (:class:`~shmopt.rules.RowwiseAMSGrad`): one ``v`` and one ``vhat`` per row
    of each parameter (its first dimension; a 1-D parameter is one row), ``m`` element-wise unless
    ``betas[0] == 0`` (then ``m = g`` and all the state is O(rows)); state (``exp_avg``,
    ``exp_avg_sq`` and ``max_exp_avg_sq`` of shape ``(rows,)``) and step count shared::

        m[i] <- b1 m[i] + (1-b1) g_i
        v_i <- b2 v_i + (1-b2) mean_j g_ij^2;   vhat_i <- max(vhat_i, v_i)
        x[i] <- x[i] - lr sqrt(1-b2^t) / (1-b1^t) * m[i] / (sqrt(vhat_i) + eps)

    ``bias_correction=False`` uses ``lr`` alone.  A sparse gradient updates the touched rows; a
    dense one every row.
    """

    rule_class = None
    row_class = RowwiseAMSGrad

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, bias_correction: bool = True, max_processes: int = 64,
                 lr_policy: LrPolicy | str | None = None, maximize: bool = False) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, bias_correction=bias_correction,
                        maximize=maximize)
        super().__init__(params, defaults, max_processes, lr_policy)
