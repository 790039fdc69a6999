"""Process plumbing of the supervisor: the start context, exit descriptions, and the shutdown
steps shared by ``Engine.close`` and its ``weakref.finalize`` safety net."""
from __future__ import annotations

import multiprocessing as mp
import signal
import time

from .arena import Arena

JOIN_TIMEOUT_S = 5.0


def start_context(method: str):
    if method == "forkserver" and "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "shmopt.engine.worker"])
        return ctx
    return mp.get_context("spawn")


def signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def release_all(arena: Arena | None, procs: list, sync: dict) -> None:
    """Steps 1-4 of the shutdown protocol (also the finalizer: must not reference the Engine)."""
    if arena is not None:
        try:
            arena.array("glob")[0]["stop"] = 1
        except Exception:
            pass
    if sync:
        sync["go"].set()
        for sem in [sync["push"], *sync["release"]]:
            sem.release()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(1.0)
        if p.is_alive():
            p.kill()
            p.join(1.0)
    if arena is not None:
        arena.close()
