"""Typed exceptions of shmopt.

Every user mistake raises :class:`ConfigError` (a ``ValueError``) before any process or
shared-memory segment exists; the CLI turns it into one line and exit code 2.
"""
from __future__ import annotations


class ShmoptError(Exception):
    """Base class of every error shmopt raises on purpose.

    An engine process that fails with one reports it typed (:meth:`to_report`, a JSON-able dict
    of its class and fields); the supervisor raises it again as the same class
    (:func:`error_from_report`), never as a string to parse."""

    def fields(self) -> dict:
        """The constructor's keyword arguments besides the message (JSON-able)."""
        return {}

    def to_report(self) -> dict:
        return {"type": type(self).__name__, "message": str(self), "fields": self.fields()}


class ConfigError(ShmoptError, ValueError):
    """An option, hyper-parameter or combination of them is invalid."""


class ProblemError(ConfigError):
    """A problem cannot be loaded or does not fit its data (missing file, no ``problem()``, ...)."""


class DataError(ConfigError):
    """A data package cannot be fetched (unknown name, no apt-get, digest mismatch) or its files
    cannot be read."""


class ShmSpaceError(ConfigError):
    """Not enough free shared memory (/dev/shm) for the requested arena."""


class WorkerError(ShmoptError):
    """A worker process raised, died by a signal, or stopped answering.

    Attributes: ``rank``, ``pid``, ``exitcode`` (negative = killed by signal ``-exitcode``),
    ``traceback`` (the worker's formatted traceback text, or ``""``).
    """

    def __init__(self, message: str, rank: int = -1, pid: int = -1, exitcode: int | None = None,
                 traceback: str = "") -> None:
        super().__init__(message)
        self.rank = rank
        self.pid = pid
        self.exitcode = exitcode
        self.traceback = traceback

    def __reduce__(self):
        return (type(self), (str(self), self.rank, self.pid, self.exitcode, self.traceback))

    def fields(self) -> dict:
        return {"rank": self.rank, "pid": self.pid, "exitcode": self.exitcode, "traceback": self.traceback}


class DivergedError(ShmoptError):
    """Training cannot go on: every recent loss or gradient was NaN/Inf (nothing was applied)."""


class NodeError(ShmoptError):
    """Across nodes: another node was lost (died, stalled past ``--dist-timeout``, unreachable) or
    runs a configuration this node cannot exchange with. ``nodes``: the node ranks named."""

    def __init__(self, message: str, nodes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.nodes = tuple(nodes)

    def __reduce__(self):
        return (type(self), (str(self), self.nodes))

    def fields(self) -> dict:
        return {"nodes": list(self.nodes)}


def error_from_report(doc: object) -> ShmoptError | None:
    """The error a failed process reported with :meth:`ShmoptError.to_report`, or None where the
    report holds no (known) typed error."""
    if not isinstance(doc, dict):
        return None
    known = {c.__name__: c for c in (ShmoptError, ConfigError, ProblemError, ShmSpaceError, WorkerError,
                                     NodeError)}
    cls = known.get(doc.get("type"))
    if cls is None:
        return None
    try:
        return cls(str(doc.get("message", "")), **dict(doc.get("fields") or {}))
    except TypeError:
        return None
