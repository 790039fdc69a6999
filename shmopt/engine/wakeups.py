"""The wake-ups between engine processes: the start signal, "a gradient was pushed" (learners ->
applier) and "new parameters" (applier -> each learner).

Made by the supervisor from its multiprocessing context and handed to every process with its
arguments (semaphores and events travel only that way). Every wait is sliced (0.1 s at most) and
calls ``check`` between slices, so a stop flag or a dead supervisor ends it.
"""
from __future__ import annotations

import time
from typing import Any, Callable

SLICE_S = 0.1


def wait_on(waitable: Any, check: Callable[[], None], timeout: float | None = None) -> bool:
    """Block on a semaphore or event in short slices; True when it was acquired/set."""
    deadline = None if timeout is None else time.monotonic() + timeout
    acquire = waitable.acquire if hasattr(waitable, "acquire") else waitable.wait
    while True:
        check()
        slice_ = SLICE_S if deadline is None else min(SLICE_S, deadline - time.monotonic())
        if slice_ <= 0:
            return False
        if acquire(timeout=slice_):
            return True


class WakeUps:
    #: set in each process whose idle waits count as quiescent (a CUDA arena: loops.common.start)
    idle: Callable[[bool], None] | None = None

    def __init__(self, ctx, workers: int) -> None:
        self.go = ctx.Event()
        self.pushed = ctx.Semaphore(0)
        self.released = [ctx.Semaphore(0) for _ in range(workers)]

    # ------------------------------------------------------------ senders
    def start(self) -> None:
        self.go.set()

    def notify_push(self) -> None:
        self.pushed.release()

    def release(self, rank: int) -> None:
        self.released[rank].release()

    def release_all(self) -> None:
        """Wake everyone (restart of the applier, shutdown)."""
        self.go.set()
        self.pushed.release()
        for sem in self.released:
            sem.release()

    # ------------------------------------------------------------ receivers
    def _wait(self, waitable: Any, check: Callable[[], None], timeout: float | None = None) -> bool:
        """wait_on, marked idle meanwhile (the supervisor may read the device buffers); a pause
        asked for during the wait is honoured before the caller's next device work."""
        if self.idle is None:
            return wait_on(waitable, check, timeout)
        self.idle(True)
        try:
            got = wait_on(waitable, check, timeout)
        finally:
            self.idle(False)
        check()
        return got

    def wait_start(self, check: Callable[[], None]) -> None:
        self._wait(self.go, check)

    def wait_push(self, check: Callable[[], None]) -> None:
        self._wait(self.pushed, check)

    def wait_release(self, rank: int, check: Callable[[], None], timeout: float | None = None) -> bool:
        return self._wait(self.released[rank], check, timeout)

    def drain(self, rank: int) -> bool:
        """Take every pending release of ``rank``; True if there was one."""
        got = False
        while self.released[rank].acquire(False):
            got = True
        return got
