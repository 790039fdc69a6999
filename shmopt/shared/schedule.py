"""A ``torch.optim.lr_scheduler`` driven by a shared optimizer's global step count.

torch's schedulers keep their own count in the process that steps them and set that process's
``param_groups`` only: a scheduler stepped in one worker does not steer the others. Each worker
may run its own scheduler (every one then follows its own steps); :class:`GlobalStepLR` instead
reads the exact global count of the shared optimizer (every process's updates,
``optimizer.step_count``) whenever it is stepped, so all workers follow one curve per update:
``lr = base_lr · schedule.factor(step_count)`` with the schedules of ``--lr-schedule``
(:mod:`shmopt.strategies.schedules`).
"""
from __future__ import annotations

from torch.optim.lr_scheduler import LambdaLR

from ..strategies.schedules import LrSchedule, parse_schedule
from .errors import SharingError

__all__ = ["GlobalStepLR"]


class GlobalStepLR(LambdaLR):
    """``GlobalStepLR(opt, "cosine:0.1", budget=10_000, warmup=100)``: call ``.step()`` after
    each ``opt.step()`` (or any time) to set this process's rate from the global step count."""

    def __init__(self, optimizer, schedule: str | LrSchedule = "constant", *, budget: int | None = None,
                 warmup: int = 0) -> None:
        if not hasattr(optimizer, "step_count"):
            raise SharingError(f"GlobalStepLR needs a shmopt shared optimizer (with a global step_count), "
                               f"got {type(optimizer).__name__}")
        self.schedule = (schedule if isinstance(schedule, LrSchedule)
                         else parse_schedule(schedule, warmup, budget))
        super().__init__(optimizer, lambda _epoch: self.schedule.factor(optimizer.step_count))
