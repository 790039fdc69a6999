"""A learner's data position, written by the learner and read by a live checkpoint without a lock.

The position is three fields of the learner's control slot: ``s_epoch`` (passes begun), ``s_len``
(rows in its current order; a stream marks an active pass with 1) and ``s_off`` (rows handed out),
plus, under ``--sampling shuffle/shard``, the order itself. Within a pass only ``s_off`` moves, one
store per batch. A new pass is written in this order (:func:`new_pass`)::

    s_len = 0   ->   the new order   ->   s_off = 0   ->   s_epoch += 1   ->   s_len = L

so ``s_len = 0`` marks the rewrite and ``s_epoch`` is its version. A reader (:func:`read_position`)
reads ``s_epoch``, ``s_len``, ``s_off``, copies the order, then reads ``s_len`` and ``s_epoch``
again. It keeps what it read when

* the first ``s_len`` was 0: the learner was between passes, and a resume starts the next pass
  (the order is not used), which is what the learner was doing; or
* both ``s_len`` were non-zero and both ``s_epoch`` equal: no rewrite overlapped the copy of the
  order (one that began before the second ``s_len`` shows there as 0 or, finished, as a new
  ``s_epoch``), and ``s_off`` belongs to that pass.

Otherwise it reads again. This relies on the learner's stores becoming visible in program order,
as x86 (TSO) guarantees; on a weaker memory order a live checkpoint could, rarely, hold a position
mixed from two passes (the final checkpoint, written with every process stopped, never does).
"""
from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")

TRIES = 2000            # reads before a learner stuck mid-rewrite (a dead one) is taken as it is
RETRY_S = 0.0005


def new_pass(state: Any, length: int, write_order: Callable[[], None] | None = None) -> None:
    """Begin the next pass of ``length`` rows (a stream: 1), writing the order (if any) first."""
    state["s_len"] = 0
    if write_order is not None:
        write_order()
    state["s_off"] = 0
    state["s_epoch"] = int(state["s_epoch"]) + 1
    state["s_len"] = length


def read_position(state: Any, copy_order: Callable[[], T] | None = None
                  ) -> tuple[int, int, int, T | None]:
    """(s_epoch, s_len, s_off, a copy of the order) as one consistent position of a learner that
    may be running."""
    for _ in range(TRIES):
        epoch, length, off = int(state["s_epoch"]), int(state["s_len"]), int(state["s_off"])
        if length == 0:
            return epoch, 0, off, None
        order = copy_order() if copy_order is not None else None
        if int(state["s_len"]) and int(state["s_epoch"]) == epoch:
            return epoch, length, off, order
        time.sleep(RETRY_S)
    return epoch, 0, off, None          # still mid-rewrite: a resume begins the next pass
