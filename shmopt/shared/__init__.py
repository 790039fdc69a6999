"""Shared ``torch.optim`` optimizers and models for processes the user manages (the A3C pattern)::

    from shmopt.shared import SharedAdam, pull_parameters, share

    shared = share(Net())                           # parameters now live in one shmopt arena
    opt = SharedAdam(shared.parameters(), lr=1e-3)  # state and an exact step count shared too
    # in each worker (pass shared and opt as torch.multiprocessing Process args):
    #     pull_parameters(local, shared); loss(local).backward(); opt.step_from(local)

See :mod:`shmopt.shared.model` (gradients: one private buffer per process) and
:mod:`shmopt.shared.optim` (state, pickling by handle, step counting, staleness).
"""
from .model import SharedModel, SharingError, pull_parameters, push_gradients, share
from .optim import SharedAdam, SharedAMSGrad, SharedSGD

__all__ = ["SharedAMSGrad", "SharedAdam", "SharedSGD", "share", "SharedModel", "push_gradients",
           "pull_parameters", "SharingError"]
