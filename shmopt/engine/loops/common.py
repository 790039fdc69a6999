"""What every learner loop does the same way: start, compute one mini-batch, book its time."""
from __future__ import annotations

import math
import time

import torch

from ..context import Context
from ..control import RUNNING
from ..tables import LearnerTables
from ..wakeups import WakeUps


class NonFiniteError(ArithmeticError):
    """A NaN/Inf loss or gradient under on_nonfinite="stop"."""


def start(ctx: Context, wakeups: WakeUps) -> None:
    """Report ready, wait for the supervisor's go."""
    if ctx.device.type != "cpu":                 # a device arena: idle waits count as quiescent
        wakeups.idle = ctx.mark_idle
    ctx.ready()
    wakeups.wait_start(ctx.check)
    ctx.counters.set_status(RUNNING)


def gradient(ctx: Context, model: torch.nn.Module, g: torch.Tensor,
             tables: LearnerTables | None = None) -> float | None:
    """One mini-batch: zero the flat gradient, forward, backward (the tables' rows taken). None if
    the loss or the gradient is not finite."""
    g.zero_()
    try:
        loss = ctx.loss_fn(model, ctx.sample())
    except IndexError as exc:
        if tables is None:
            raise
        raise tables.index_error(exc) from exc
    loss.backward()
    if tables is not None:
        tables.take()
    value = float(loss.detach())
    wp = ctx.plan.worker
    ctx.counters.gradient(wp.batch_size, value)
    # one reduction instead of an n-element mask: a NaN or Inf anywhere makes the sum non-finite
    if wp.check_finite and not (math.isfinite(value) and math.isfinite(float(g.sum()))
                                and (tables is None or tables.finite())):
        ctx.counters.count("nonfinite")
        if wp.stop_on_nonfinite:
            raise NonFiniteError(f"non-finite loss ({value}) or gradient at this worker's mini-batch "
                                 f"{int(ctx.counters['grads'])} (--on-nonfinite stop)")
        return None
    return value


def timed(ctx: Context, t_begin: float, delay: float) -> None:
    """Book one mini-batch's time outside the injected delay (the theory's compute term)."""
    ctx.counters.timed(time.perf_counter() - t_begin - delay)
