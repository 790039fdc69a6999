"""Checkpoints written in the background: one at a time, on a thread of the supervisor.

``torch.save`` and ``fsync`` release the GIL while they write, so the supervisor's loop (watching
the processes, evaluating, stopping) goes on while a checkpoint of gigabytes streams to disk. What
the thread writes from (views of shared memory or a private copy) is dropped when it ends, before
the arena may close. An error the write raised (other than the ``OSError`` that
:mod:`.checkpoint_files` turns into a warning) is raised again by the next :meth:`join`.
"""
from __future__ import annotations

import threading
from typing import Callable


class BackgroundWriter:
    """At most one write in flight; :meth:`join` waits for it."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the writer's thread (after the write before it)."""
        self.join()
        self._thread = threading.Thread(target=self._run, args=(job,), name="shmopt-checkpoint",
                                        daemon=True)
        self._thread.start()

    def _run(self, job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:            # raised again in the supervisor by join()
            self._error = exc

    def join(self) -> None:
        """Wait for the write in flight, if any; raise what it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
