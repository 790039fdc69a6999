"""Stop a run that cannot make progress: every recent loss or gradient was NaN/Inf.

Non-finite gradients are skipped (``--on-nonfinite skip``), so a run whose every loss is
non-finite (a diverged model, a rate far too large, bad data) applies nothing and, with a step
limit, would wait forever. The supervisor watches the counters: ``STREAK`` non-finite gradients in
a row (over all learners, none finite in between) stop the run with :class:`DivergedError`.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import DivergedError

STREAK = 200
STREAK_S = 3.0


class NonFiniteWatch:
    """The run's non-finite streak, checked at each of the supervisor's polls."""

    def __init__(self, learners: int, streak: int = STREAK, streak_s: float = STREAK_S) -> None:
        self._p, self._streak, self._streak_s = learners, streak, streak_s
        # the most finite gradients seen: read racily, a learner counts a gradient before it is
        # known non-finite, so a read may see up to one per learner too many (hence the maximum)
        self._finite = -1
        self._bad_since = 0         # non-finite count when the last finite gradient was seen
        self._t_since = 0.0         # and when

    def check(self, ctrl: np.ndarray) -> None:
        """Raise DivergedError when ``streak`` gradients in a row, over ``streak_s`` seconds, were
        non-finite."""
        bad = int(ctrl["nonfinite"].sum())
        finite = int(ctrl["grads"][:self._p].sum()) - bad
        now = time.monotonic()
        if finite > self._finite:
            self._finite, self._bad_since, self._t_since = finite, bad, now
        elif bad - self._bad_since >= self._streak and now - self._t_since >= self._streak_s:
            raise DivergedError(f"the last {bad - self._bad_since} mini-batches all gave a non-finite "
                                f"(NaN/Inf) loss or gradient and nothing was applied for "
                                f"{now - self._t_since:.1f} s: the model diverged or the data has NaN/Inf; "
                                f"try a smaller --lr")
