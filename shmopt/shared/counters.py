"""An exact, lock-free global step counter for processes the user starts himself.

A shared ``count += 1`` from several processes loses increments (read-modify-write races).
Here every process owns one cache-line-padded *slot* of a table in shared memory and is the
only writer of its slot; the global count is ``base + sum(slot.count)``: no increment is ever
lost and ``step()`` never takes a lock.

Claiming a slot is the only synchronised operation, done once when a process attaches (object
creation or unpickling): under an exclusive ``flock`` on the shared-memory segment's own file,
a process takes the first slot that is free (``pid == 0``, released by ``close``) or whose
owner process is dead; the dead owner's count is kept, the new owner goes on adding to it, so
the sum stays exact.  ``base`` is written by ``load_state_dict`` only (to set the count).

Slots are padded to 128 bytes (two cache lines: the adjacent-line prefetcher fetches pairs), so
two processes never write the same line.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError
from ..memory import Arena
from ..memory.shm import SHM_DIR, pid_alive

SLOT_BYTES = 128


def _padded(fields: list[tuple], size: int) -> np.dtype:
    dt = np.dtype(fields, align=True)
    return np.dtype(fields + [("_pad", "u1", (size - dt.itemsize,))], align=True)


#: One process's record: owner pid (0 = free), its updates, and the staleness of those updates.
SLOT = _padded([("pid", "i8"), ("count", "i8"), ("stale_sum", "i8"), ("stale_max", "i8")], SLOT_BYTES)
#: ``base`` of the global count (set by load_state_dict).
HEADER = _padded([("base", "i8")], SLOT_BYTES)


def counter_specs(max_processes: int) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """Arena layout entries of a counter with ``max_processes`` slots."""
    if isinstance(max_processes, bool) or not isinstance(max_processes, int) or max_processes < 1:
        raise ConfigError(f"invalid max_processes={max_processes!r}: must be an integer >= 1")
    return [("step_header", (1,), HEADER), ("step_slots", (max_processes,), SLOT)]


@contextlib.contextmanager
def _claim_lock(arena: Arena) -> Iterator[None]:
    """Exclusive ``flock`` on the segment's file (a fresh open file description, so it also
    excludes other threads and other attachments of this process)."""
    import fcntl

    path = os.path.join(SHM_DIR, arena.name)
    fd = os.open(path, os.O_RDWR) if os.path.exists(path) else \
        os.dup(arena.storage.fileno())  # non-Linux POSIX: the mapping's own descriptor
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)          # closing the last descriptor releases the lock


class StepCounter:
    """This process's view of the counter: claims a slot on creation, releases it on close."""

    def __init__(self, arena: Arena) -> None:
        self._slots = arena.array("step_slots")
        self._header = arena.array("step_header")
        self.pid = os.getpid()
        with _claim_lock(arena):
            for i in range(len(self._slots)):
                pid = int(self._slots[i]["pid"])
                if pid == 0 or not pid_alive(pid):
                    self._slots[i]["pid"] = self.pid
                    break
            else:
                raise ConfigError(
                    f"all {len(self._slots)} step-counter slots are held by live processes: create "
                    f"the optimizer with a larger max_processes (one slot per attached process)")
        self.index = i
        self._mine = self._slots[i:i + 1]       # 1-element view: writes go to shared memory
        self.local = 0                          # updates made through this object

    def increment(self) -> int:
        """Count one update of this process; return the global count including it."""
        self._mine["count"] += 1
        self.local += 1
        return self.total()

    def record_staleness(self, staleness: int) -> None:
        if staleness > 0:
            rec = self._mine
            rec["stale_sum"] += staleness
            if staleness > rec["stale_max"][0]:
                rec["stale_max"] = staleness

    def total(self) -> int:
        """The exact global count (every slot, live or released, plus ``base``)."""
        return int(self._slots["count"].sum()) + int(self._header["base"][0])

    def set_total(self, value: int) -> None:
        """Make the global count equal ``value`` (not atomic against concurrent steps)."""
        self._header["base"] = int(value) - int(self._slots["count"].sum())

    def stats(self) -> dict[str, int]:
        s = self._slots
        return {"steps": self.total(), "slots_used": int((s["count"] > 0).sum()),
                "staleness_sum": int(s["stale_sum"].sum()), "staleness_max": int(s["stale_max"].max())}

    def release(self) -> None:
        """Free the slot (its count stays in the sum). Only the owning process writes it."""
        if self._mine is not None and os.getpid() == self.pid and int(self._mine["pid"][0]) == self.pid:
            self._mine["pid"] = 0
        self._mine = None
        self._slots = self._header = None   # drop the views of the shared memory
