"""The progress line of ``shmopt run``: what a run has done against what it was asked to do.

It is redrawn at every evaluation (``Engine``'s ``on_sample``) on one terminal line:

    training  [######--------------]  4.5/15.0 s  1,302 updates  289 updates/s  loss 0.45121  accuracy 0.8120

With ``--steps`` the bar and the count are updates against the steps, with an estimate of the
time left from the mean rate so far; with ``--time-limit`` they are seconds against the limit
(no estimate: the limit is the end); with only a target, elapsed seconds and updates, no bar.
:func:`progress_line` is the formatting, a pure function (tested without a terminal).
"""
from __future__ import annotations

import shutil
import sys
from typing import TextIO

BAR_WIDTH = 20


def _bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = int(round(min(max(fraction, 0.0), 1.0) * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def progress_line(t: float, updates: int, steps: int | None = None, time_limit: float | None = None,
                  loss: float | None = None, accuracy: float | None = None,
                  k: int | None = None) -> str:
    """One progress line: elapsed ``t`` seconds and ``updates`` against ``steps`` and/or
    ``time_limit`` (whichever ends the run first fills the bar), updates/s, loss, accuracy and,
    when given, the K in force (``--k adaptive``)."""
    rate = updates / t if t > 0 else 0.0
    fractions = []
    if steps:
        fractions.append(updates / steps)
    if time_limit:
        fractions.append(t / time_limit)
    parts = ["training"]
    if fractions:
        parts.append(_bar(max(fractions)))
    parts.append(f"{t:.1f}/{time_limit:.1f} s" if time_limit else f"{t:.1f} s")
    parts.append(f"{updates:,}/{steps:,} updates" if steps else f"{updates:,} updates")
    parts.append(f"{rate:,.0f} updates/s")
    if steps and not time_limit and 0 < rate and updates < steps:
        parts.append(f"~{(steps - updates) / rate:.0f} s left")
    if loss is not None:
        parts.append(f"loss {loss:.5g}")
    if accuracy is not None:
        parts.append(f"accuracy {accuracy:.4f}")
    if k is not None:
        parts.append(f"K {k}")
    return "  ".join(parts)


class Progress:
    """Redraws :func:`progress_line` in place on a terminal at each evaluation sample."""

    def __init__(self, steps: int | None, time_limit: float | None, show_k: bool = False,
                 out: TextIO | None = None) -> None:
        self.steps, self.time_limit, self.show_k = steps, time_limit, show_k
        self.out = out or sys.stdout
        self.drawn = False

    def sample(self, s) -> None:
        """``on_sample`` callback: one engine Sample (t, updates, loss, metrics, k)."""
        acc = (s.metrics or {}).get("accuracy")
        line = progress_line(s.t, s.updates, self.steps, self.time_limit, s.loss, acc,
                             s.k if self.show_k else None)
        width = shutil.get_terminal_size((120, 24)).columns - 1
        self.out.write("\r" + line[:width].ljust(width))
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()


__all__ = ["Progress", "progress_line"]
