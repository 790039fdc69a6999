"""A learner's data position read while the learner runs (strategies.position): every read the
reader keeps is one whole position, never an order half rewritten for the next pass."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np

from shmopt.memory.shm import ShmBackend
from shmopt.strategies.position import new_pass, read_position

FIELDS = np.dtype([("s_epoch", "i8"), ("s_len", "i8"), ("s_off", "i8")])
ROWS, PASSES, BATCHES = 20_000, 3_000, 3


def _views(block):
    slot = np.ndarray((1,), dtype=FIELDS, buffer=block.host_buffer())
    order = np.ndarray((ROWS,), dtype=np.int64, buffer=block.host_buffer(), offset=64)
    return slot, order


def _learner(handle) -> None:
    """Pass after pass: the order of pass e holds e everywhere, then a few batches are handed out."""
    block = ShmBackend().attach(handle)
    slot, order = _views(block)
    st = slot[0]
    for _ in range(PASSES):
        epoch = int(st["s_epoch"]) + 1

        def write_order(epoch=epoch, order=order):
            for part in range(0, ROWS, 1000):         # slowly, so that a copy can overlap it
                order[part:part + 1000] = epoch
        new_pass(st, ROWS, write_order)
        for b in range(BATCHES):
            st["s_off"] = (b + 1) * 100
    del st, slot, order
    block.close()


def test_a_position_read_while_the_learner_begins_passes_is_never_torn():
    block = ShmBackend().create(64 + ROWS * 8)
    slot = order = p = None
    try:
        slot, order = _views(block)
        slot[0] = (0, 0, 0)
        p = mp.get_context("spawn").Process(target=_learner, args=(block.export(),))
        p.start()
        kept = 0
        while True:                     # the last read comes after the learner has finished
            done = not p.is_alive()
            epoch, length, off, rows = read_position(slot[0], order.copy)
            if length:
                kept += 1
                assert set(np.unique(rows).tolist()) == {epoch}, (epoch, np.unique(rows)[:5])
                assert length == ROWS and 0 <= off <= BATCHES * 100
            if done:
                break
        p.join()
        assert p.exitcode == 0
        assert (epoch, length, off) == (PASSES, ROWS, BATCHES * 100)
    finally:
        if p is not None and p.is_alive():
            p.kill()
        if p is not None:
            p.join()
        del slot, order
        block.close()
        block.unlink()
