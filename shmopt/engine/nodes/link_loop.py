"""The node link's loop (rank P of direct and replica protocols across nodes: engine.roles).

It joins the process group, checks that every node runs the same configuration, gives every node
node 0's starting point, reports ready, and then runs the plan's exchange (engine.nodes.exchanges)
every ``NodePlan.every`` node updates (the sum of its learners' update counters; it never blocks
them). Each exchange carries the node's vote; after the exchange in which one node
halted or every node is done, the link stops its learners (``finish``), waits until they have
stopped, runs one final exchange with no update in flight (so every node ends with the same model),
says ``link_done`` and leaves.

It is a process of its own rather than a thread of the supervisor: the supervisor's evaluations
hold the GIL for a whole forward pass and would delay exchanges, and as an engine process the
link gets the group's failure reporting (its NodeError reaches the supervisor in its report
file) and its watch on a dead supervisor for free. Measured cost on 2 cores: about 10% of a core
at H = 10 on mlp, most of it gloo's transport, none of it on the workers' path.
"""
from __future__ import annotations

import time

from ...strategies.nodes import finished
from ..context import Context
from ..control import DONE, DONE_VOTE, FAILED, HALT_VOTE
from ..loops.common import start
from ..wakeups import WakeUps
from .exchange import book, initial_broadcast
from .exchanges import make_exchange
from .link import connect

IDLE_S = 0.002                  # between exchanges: a 2 ms poll costs < 1% of a core
STOP_WAIT_S = 30.0


def _wait_learners(ctx: Context) -> None:
    status = ctx.buffers.ctrl["status"][:ctx.plan.workers]
    deadline = time.monotonic() + STOP_WAIT_S
    while not all(int(s) in (DONE, FAILED) for s in status) and time.monotonic() < deadline:
        ctx.check_abort()
        time.sleep(IDLE_S)


def link_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, glob, every = ctx.plan, ctx.glob, ctx.plan.nodes.every
    updates = ctx.buffers.ctrl["updates"][:plan.workers]
    link = connect(ctx)
    clean = False
    try:
        exchange, local = make_exchange(ctx, link)
        initial_broadcast(link, local)
        exchange.initial()
        start(ctx, wakeups)
        next_at, last = every, 0
        while True:
            ctx.check()
            link.beat()
            n = int(updates.sum())
            vote_done = bool(glob["finish"]) or (plan.steps is not None and n >= plan.steps)
            if n < next_at and not vote_done:
                time.sleep(IDLE_S)
                continue
            vote = exchange.exchange(vote_done, glob["finish"] >= HALT_VOTE, n)
            merged = int(updates.sum())
            book(glob, link, vote, merged - last)
            next_at, last = n + every, merged
            if finished(vote.n_done, vote.n_halt, plan.nodes.nnodes):
                break
        if vote.n_halt > 0 and glob["finish"] < HALT_VOTE:   # another node ended the job
            glob["peer_finish"] = 1
        if not glob["finish"]:
            glob["finish"] = DONE_VOTE
        _wait_learners(ctx)
        n = int(updates.sum())
        vote = exchange.exchange(True, False, n, final=True)
        book(glob, link, vote, n - last)
        glob["link_done"] = 1
        clean = True
    finally:
        link.close(clean)
