"""One process's hold on an arena: the owner/attach lifecycle of :mod:`shmopt.shared` objects.

Every shared object (a :class:`~shmopt.shared.SharedModel`, a shared optimizer) keeps its bytes
in one arena and follows the same rules, written here once:

* the creating process makes the arena (:meth:`Attachment.create`) and is its *owner*;
* the object pickles *by handle* (:attr:`Attachment.handle`); unpickling in another process
  attaches to the same bytes (:meth:`Attachment.attach`), untracked by the resource tracker;
* a ``weakref.finalize`` closes the arena when the hold is garbage collected or at exit: it first
  runs the hold's close callbacks (e.g. freeing a step-counter slot), then detaches, and unlinks
  the segment only in the owning process: never in an attached process, nor in a forked child
  that inherited the owner's object, where the parent's callbacks do not run either
  (:meth:`Attachment.adopt_after_fork` makes such a hold an attachment of the child);
* :meth:`Attachment.close` runs that finalizer now; it is idempotent.

The finalizer references the arena and the callbacks, never the hold nor its holder, so holding
an :class:`Attachment` does not keep a shared object alive.
"""
from __future__ import annotations

import os
import weakref
from collections.abc import Callable

from ..memory import HOST, Arena, ArenaHandle, Layout

__all__ = ["Attachment", "handle_name"]


def handle_name(handle: ArenaHandle) -> str:
    """The name of the arena that ``handle`` refers to (``Arena.name`` once attached)."""
    return dict(handle.storages)[HOST].name


def _release(arena: Arena, owner: bool, pid: int, callbacks: list[Callable[[], None]]) -> None:
    """The finalizer: close callbacks (in the process that registered them), detach; unlink
    only in the owning process."""
    try:
        if os.getpid() == pid:
            for fn in callbacks:
                fn()
    finally:
        callbacks.clear()
        arena.close(unlink=owner and os.getpid() == pid)


class Attachment:
    """This process's hold on one arena (see the module docstring)."""

    def __init__(self, arena: Arena, owner: bool) -> None:
        self.arena = arena
        self._register(owner)

    @classmethod
    def create(cls, layout: Layout) -> "Attachment":
        """A new arena laid out as ``layout``, owned by this process."""
        return cls(Arena.create(layout), owner=True)

    @classmethod
    def attach(cls, handle: ArenaHandle) -> "Attachment":
        """Attach (untracked) to the arena of ``handle``, made by another object or process."""
        return cls(Arena.attach(handle), owner=False)

    def _register(self, owner: bool) -> None:
        self._owner, self._pid = owner, os.getpid()
        self._callbacks: list[Callable[[], None]] = []
        self._finalizer = weakref.finalize(self, _release, self.arena, owner, self._pid, self._callbacks)

    # ------------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def owner(self) -> bool:
        """True in the process that created the arena while it is open: the one that unlinks."""
        return self._owner and not self.closed and os.getpid() == self._pid

    @property
    def name(self) -> str:
        return self.arena.name

    @property
    def handle(self) -> ArenaHandle:
        """What a pickled shared object carries to another process."""
        return self.arena.handle

    @property
    def forked(self) -> bool:
        """True in a forked child that inherited this hold from its parent."""
        return os.getpid() != self._pid

    # -------------------------------------------------------------------- lifecycle
    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the hold closes, before the arena is detached.  ``fn`` must not
        reference the shared object (it would never be collected)."""
        self._callbacks.append(fn)

    def adopt_after_fork(self) -> None:
        """In a forked child: make this inherited hold an attachment of this process (it will
        never unlink; the parent's close callbacks are dropped, not run)."""
        if self.forked and not self.closed:
            self._finalizer.detach()
            self._register(owner=False)

    def close(self) -> None:
        """Run the close callbacks, detach, and unlink in the owning process.  Idempotent."""
        self._finalizer()
