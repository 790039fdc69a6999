"""Which arena rows are "the model" the supervisor evaluates, checkpoints and hands back."""
from __future__ import annotations

import torch

from ..plan import Plan
from .layout import Buffers


def the_model(plan: Plan, b: Buffers, leader: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(flat parameters, flat module buffers or None): the shared x; for lsgd the leader's
    replica (across nodes the global leader's, published in ``gleader``); for easgd the centre
    variable, whose buffers are the replicas' mean (a centre has no statistics of its own)."""
    if plan.replicas is None:
        return b.x, b.mbuf
    row = leader if leader is not None else 0
    mb = None if b.mbuf is None else (b.mbuf.mean(0) if b.center is not None else b.mbuf[row])
    if b.center is not None:
        return b.center, mb
    if b.gleader is not None and b.glob["gl_version"] > 0:    # lsgd across nodes
        return b.gleader[int(b.glob["gl_index"])], mb
    return b.x[row], mb
