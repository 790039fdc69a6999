"""Across nodes: the decisions every node takes the same way from the same exchanged numbers.

Each exchange carries every node's vote: ``done`` (its own stop criterion is met: its share of
the steps, the time limit; it keeps exchanging until all are done) and ``halt`` (stop everyone
now: target loss reached, Ctrl-C). Every node sees the same sums, so all of them take the final
exchange together and the collectives stay matched.
"""
from __future__ import annotations

import math
from typing import Sequence


def finished(n_done: float, n_halt: float, nnodes: int) -> bool:
    """The job ends after this exchange: one node halted, or every node is done."""
    return n_halt > 0 or n_done >= nnodes


def select_global(rows: Sequence[Sequence[float]]) -> tuple[int, int, float]:
    """The global leader from each node's ``(score, node, worker, ...)`` row: the lowest finite
    score (the local leader's windowed mean loss), ties to the lowest node; (node, worker, score)."""
    best = None
    for row in rows:
        score, node, worker = float(row[0]), int(row[1]), int(row[2])
        key = (score if math.isfinite(score) else math.inf, node)
        if best is None or key < best[0]:
            best = (key, node, worker, score)
    if best is None:
        raise ValueError("no nodes to select a global leader from")
    return best[1], best[2], best[3]
