"""Named semaphores left behind by killed runs: ``/dev/shm/sem.mp-*``.

Python's multiprocessing makes a named POSIX semaphore for every lock, event, condition and queue
of a spawn or forkserver context. It removes the name when the object is collected, or its
resource tracker removes it at exit. A run killed as a whole (``kill -9`` of its process group, a
container stop) takes the tracker with it, and the names stay. Nothing else ever removes them,
so they pile up, several per killed run.

A semaphore is stale when no live process maps it (a process that holds the lock, or any object
built on it, maps the file: found by inode in every readable ``/proc/PID/maps``) and it is older
than a grace period. A semaphore being created is
mapped before it is old. Only this user's semaphores are looked at; another user's cannot be
removed anyway.
"""
from __future__ import annotations

import os
import time

from .shm import SHM_DIR

PREFIX = "sem.mp-"
GRACE_S = 60.0


def _mapped() -> set[int]:
    """The inodes of the semaphore files that some live process maps (every process whose map
    table this user can read). By inode: glibc maps a semaphore under a temporary name that it
    then links to the final one, so a map table shows ``sem.XXXXXX (deleted)``."""
    found: set[int] = set()
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if f"{SHM_DIR}/sem." in line:
                        found.add(int(line.split()[4]))
        except (OSError, ValueError, IndexError):      # gone, or another user's
            continue
    return found


def stale_semaphores(grace_s: float = GRACE_S) -> list[str]:
    """This user's ``sem.mp-*`` files that no live process maps, older than ``grace_s`` seconds."""
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)]
    except OSError:
        return []
    if not names:
        return []
    mapped, now, uid = _mapped(), time.time(), os.getuid()
    out = []
    for name in names:
        try:
            st = os.stat(os.path.join(SHM_DIR, name))
        except OSError:
            continue
        if st.st_uid == uid and now - st.st_mtime > grace_s and st.st_ino not in mapped:
            out.append(name)
    return sorted(out)


def sweep_stale_semaphores(grace_s: float = GRACE_S) -> list[str]:
    """Remove the stale semaphores (see the module text); their names."""
    removed = []
    for name in stale_semaphores(grace_s):
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
        except OSError:
            pass
    return removed
