"""How a node's supervisor (the Engine, passed in) ends a job across nodes: its vote, then the
wait for the final exchange."""
from __future__ import annotations

import time
from typing import Any

from ...errors import WorkerError
from ..control import DONE_VOTE, HALT_VOTE

POLL_S = 0.01


def finish_nodes(engine: Any, reason: str, deadline: float | None = None) -> None:
    """Vote (done, or halt for a target reached / Ctrl-C) and wait until the node link has run
    the final exchange. A lost node surfaces as the link's failure; a second Ctrl-C (or
    ``deadline`` seconds) gives up the wait."""
    glob = engine.buffers.glob
    if not glob["finish"]:
        halt = reason in ("target_loss", "target_accuracy", "interrupted")
        glob["finish"] = HALT_VOTE if halt else DONE_VOTE
    end = time.monotonic() + deadline if deadline is not None else None
    try:
        while not glob["link_done"]:
            engine.check_processes()
            if end is not None and time.monotonic() > end:
                return
            engine.group.wait(POLL_S)
    except (KeyboardInterrupt, WorkerError):
        if deadline is None:
            raise


def halt_nodes(engine: Any) -> None:
    """Ctrl-C or SIGTERM on this node: stop every node (a bounded wait for the final exchange)."""
    if engine.plan.nodes is not None and engine.buffers is not None:
        finish_nodes(engine, "interrupted", deadline=min(10.0, engine.plan.nodes.timeout))
