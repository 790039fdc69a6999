"""The relay: rank P of every node but node 0 in server protocols across nodes (engine.roles).

It is the node's applier turned into a forwarder. Each gradient its learners push goes to the
global applier on node 0 (engine.nodes.global_io) as one wire.UpMessage, and the slot is freed at once,
so learners work exactly as inside a node (loops/client.py). A receiver thread takes the global
applier's answers: it publishes the parameters under the node's seqlock with their global
version, so staleness is counted in global versions, books the node's share of the applied and
dropped gradients into the relay's own control slot (the node's staleness figures), and wakes
the learners each answer names. The node's vote (its supervisor's ``finish``: done, or halt
for a target loss or Ctrl-C) goes up as a VOTE; the job ends with END (final parameters and
why), answered by BYE. With nothing to send for a while the relay sends a keepalive. A model's
tables go up as each gradient's rows and come down as the rows node 0 wrote since this node's
previous answer, written into the node's tables under the same seqlock as the parameters.
"""
from __future__ import annotations

import threading
import time
from functools import partial

import torch

from ...errors import NodeError
from ..context import Context
from ..control import HALT_VOTE
from ..loops.common import start
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..wakeups import WakeUps, wait_on
from .exchange import initial_broadcast
from .global_io import keepalive_s
from .link import NodeLink, connect
from .wire import (
    BYE,
    END,
    END_HALT,
    END_LOST,
    GRAD,
    KEEPALIVE,
    VOTE,
    DownMessage,
    UpMessage,
    rows_buffer,
    unpack_rows,
)


class Answers:
    """The receiver thread of a relay."""

    def __init__(self, ctx: Context, link: NodeLink, store: SeqlockStore, wakeups: WakeUps) -> None:
        self.ctx, self.link, self.store, self.wakeups = ctx, link, store, wakeups
        self.msg = DownMessage(store.x.numel(), ctx.plan.workers, len(ctx.plan.tables))
        self.dims = [t.dim for t in ctx.plan.tables]
        self.end: tuple[int, int] | None = None
        self.error: BaseException | None = None
        self.received = 0
        self._thread = threading.Thread(target=self._run, name="shmopt-answers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        msg = self.msg
        while True:
            try:
                self.link.recv(msg.buf, 0)
            except Exception as exc:  # noqa: BLE001 - raised in the main thread by check()
                self.error = exc
                self.wakeups.notify_push()
                return
            self.received += 1
            if msg.kind == KEEPALIVE:
                continue
            rows = []
            if any(counts := msg.row_counts):      # the rows written since the last answer follow
                buf = rows_buffer(counts, self.dims)
                try:
                    self.link.recv(buf, 0)
                except Exception as exc:  # noqa: BLE001
                    self.error = exc
                    self.wakeups.notify_push()
                    return
                rows = unpack_rows(buf, counts, self.dims)
            write = partial(_write_rows, self.ctx.tables, rows) if rows else None
            self.store.publish(msg.x, msg.version, write)
            self.ctx.glob["all_updates"] = msg.version
            self.ctx.counters.book(msg.booking())
            for r in msg.release():
                self.wakeups.release(r)
            if msg.kind == END:
                self.end = msg.end
                self.wakeups.notify_push()
                return

    def check(self) -> None:
        if self.error is not None:
            raise self.link.lost(self.error, "the wait for the global applier's answers")


def _write_rows(tables: tuple[torch.Tensor, ...], rows: list) -> None:
    """Node 0's values of the rows it sent (under the node's seqlock, with the dense parameters)."""
    for table, (idx, values) in zip(tables, rows):
        table.index_copy_(0, idx, values)


def relay_loop(ctx: Context, wakeups: WakeUps) -> None:
    plan, glob, node = ctx.plan, ctx.glob, ctx.plan.nodes.rank
    store = SeqlockStore(ctx.x, ctx.state, glob)
    mailbox = GradientMailbox(ctx.arena, plan.workers, plan.tables)
    link = connect(ctx)
    clean = False
    try:
        version = torch.tensor([0])
        initial_broadcast(link, [store.x, *ctx.tables, version])
        glob["version"] = int(version)              # before any learner reads
        answers = Answers(ctx, link, store, wakeups)
        answers.start()
        start(ctx, wakeups)
        voted = _relay(ctx, wakeups, link, mailbox, answers, node)
        reason, lost = answers.end
        if reason == END_LOST:
            raise NodeError(f"node {lost} was lost: the global applier on node 0 ended the job "
                            f"(--on-node-failure stop)", (lost,))
        done = plan.steps is not None and store.version() >= plan.steps
        if (reason == END_HALT and voted < HALT_VOTE) or (not voted and not done):
            glob["peer_finish"] = 1                  # another node ended the job
        glob["link_done"] = 1
        clean = True
    finally:
        link.close(clean)


def _relay(ctx: Context, wakeups: WakeUps, link: NodeLink, mailbox: GradientMailbox,
           answers: Answers, node: int) -> int:
    """Forward gradients and the vote until END; then BYE. Returns this node's vote."""
    glob, keep = ctx.glob, keepalive_s(ctx.plan.nodes.timeout)
    up = UpMessage(mailbox.grads.shape[-1], mailbox.params_read is not None, ctx.plan.tables)
    last, voted = time.monotonic(), 0

    def send(msg: UpMessage) -> None:
        nonlocal last
        try:
            link.send(msg.buf, 0)
        except Exception as exc:  # noqa: BLE001
            raise link.lost(exc, "a send to the global applier") from None
        last = time.monotonic()
        glob["exchanges"] += 1
        glob["wire_bytes"], glob["comm_s"] = link.bytes, link.comm_s

    def check() -> None:
        ctx.check()
        link.beat()
        answers.check()

    while answers.end is None:
        wait_on(wakeups.pushed, check, timeout=0.1)
        for a in mailbox.arrivals():
            up.grad.copy_(mailbox.grad(a))
            if up.params is not None:
                up.params.copy_(mailbox.params_of(a))
            if mailbox.rows is not None:
                up.put_rows(mailbox.rows_of(a))
            send(up.pack(GRAD, node, a.rank, a.version))
            mailbox.consume(a)
        if (vote := int(glob["finish"])) > voted:
            send(up.pack(VOTE, node, vote=vote))
            voted = vote
        if time.monotonic() - last > keep and answers.end is None:
            send(up.pack(KEEPALIVE, node))
    send(up.pack(BYE, node))
    return voted
