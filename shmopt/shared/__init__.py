"""Shared ``torch.optim`` optimizers and models for processes the user manages (the A3C pattern)::

    from shmopt.shared import SharedAdam, pull_parameters, share

    shared = share(Net())                           # parameters now live in one shmopt arena
    opt = SharedAdam(shared.parameters(), lr=1e-3)  # state and an exact step count shared too
    # in each worker (pass shared and opt as torch.multiprocessing Process args):
    #     pull_parameters(local, shared); loss(local).backward(); opt.step_from(local)

The modules, bottom up: :mod:`~shmopt.shared.lifecycle` (an object's hold on its arena: owner,
attach by handle, finalizer), :mod:`~shmopt.shared.counters` (the exact step count),
:mod:`~shmopt.shared.guards` and :mod:`~shmopt.shared.model` (the shared model and what keeps
it shared), :mod:`~shmopt.shared.push_pull` (gradients: one private buffer per process),
:mod:`~shmopt.shared.param_groups`, :mod:`~shmopt.shared.group_rules` (the rule of each group),
:mod:`~shmopt.shared.torch_state` and
:mod:`~shmopt.shared.optimizer_base` (state, pickling by handle, step counting, staleness), and
:mod:`~shmopt.shared.optimizers` (the optimizer classes), :mod:`~shmopt.shared.schedule` (a
scheduler on the global step count).  Only the memory layer, the rules and
the strategies are used, nothing above them.
"""
from .errors import SharingError
from .model import SharedModel, share
from .optimizers import (
    SharedAdagrad,
    SharedAdam,
    SharedAMSGrad,
    SharedRowwiseAdagrad,
    SharedRowwiseAMSGrad,
    SharedSGD,
    SharedSparseAdam,
)
from .push_pull import pull_parameters, push_gradients
from .schedule import GlobalStepLR

__all__ = ["SharedAMSGrad", "SharedAdam", "SharedSGD", "SharedAdagrad", "SharedSparseAdam",
           "SharedRowwiseAdagrad", "SharedRowwiseAMSGrad", "share", "SharedModel", "push_gradients",
           "pull_parameters", "SharingError", "GlobalStepLR"]
