"""The node link's loop (rank ``workers`` of direct and replica protocols across nodes).

It joins the process group, checks that every node runs the same configuration, gives every
node node 0's starting point, reports ready, and then exchanges every ``NodePlan.every`` node
updates (the sum of its learners' update counters; it never blocks them). Each exchange carries
the node's vote; after the exchange in which one node halted or every node is done, the link
stops its learners (``finish``), waits until they have stopped, runs one final exchange with no
update in flight (so every node ends with the same model), says ``link_done`` and leaves.

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
from ..exchanges import DeltaExchange, LeaderExchange, book, initial_broadcast
from ..node_link import NodeLink
from ..wakeups import WakeUps
from .common import start

IDLE_S = 0.002                  # between exchanges: a 2 ms poll costs < 1% of a core
STOP_WAIT_S = 30.0


def node_signature(ctx: Context) -> tuple[list[float], list[str]]:
    """What every node must share to exchange: workers, parameters, the nodes' steps, K."""
    p = ctx.plan
    n = ctx.buffers.x.shape[-1]
    return ([float(p.workers), float(n), float(p.nodes.total_steps or 0), float(p.k)],
            ["workers", "parameters", "steps", "k"])


def connect(ctx: Context) -> NodeLink:
    link = NodeLink(ctx.plan.nodes, ctx.check_abort).connect()
    link.agree(*node_signature(ctx))
    return link


def make_exchange(ctx: Context, link: NodeLink):
    """The family's exchange, and what else must start equal on every node but is not exchanged."""
    plan, b = ctx.plan, ctx.buffers
    if plan.replicas is not None and plan.replicas.variant == "lsgd":
        return LeaderExchange(link, b.x, b.gleader, b.glob, b.ctrl, plan.workers, plan.replicas.window), []
    if b.center is not None:                            # easgd: the centres; replicas stay local
        return DeltaExchange(link, [b.center]), [b.x]
    np_ = plan.nodes
    state = list(b.state.values())                      # per node, unless --sync-state
    bufs = [b.x] + (state if np_.sync_state else [])
    return DeltaExchange(link, bufs, np_.outer_lr, np_.outer_momentum), ([] if np_.sync_state else state)


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
