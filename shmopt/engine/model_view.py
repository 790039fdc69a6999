"""Which arena rows are "the model" the supervisor evaluates, checkpoints and hands back."""
from __future__ import annotations

import torch

from ..plan import Plan
from .layout import Buffers


def the_model(plan: Plan, b: Buffers, leader: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(flat parameters, flat module buffers or None): the shared x, or what the replica method
    calls its model (lsgd: the leader's replica, across nodes the global leader's; easgd and
    local SGD: the centre, with the replicas' mean statistics)."""
    if plan.replicas is None:
        return b.x, b.mbuf
    return plan.replicas.model(b.x, b.mbuf, b.extra, b.glob, leader)
