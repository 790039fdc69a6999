"""The global applier's gradients in and answers out (server protocols across nodes: apam or
hogwild with ``--protocol server`` and the K-variants; node 0's rank P).

Node 0's own learners push into its mailbox, as inside a node. Every other node's relay
(nodes/relay.py) sends one wire.UpMessage per gradient. A receiver thread takes them with
any-source receives into a pool of message buffers (gloo's point-to-point receives cannot be
polled, and one any-source receive serves every node). The pool holds
every remote learner's ring in flight; when it is full the senders wait (a gloo send returns once
it is received), which is the back-pressure. Learner ``rank`` of node ``m`` is learner
``m·P + rank`` of the aggregator, so K counts worker gradients over all nodes.

Answers: one sender thread per remote node. An update marks the nodes that need it (those of
the gradients in the batch and of the learners it releases); the thread sends the newest
parameters (a seqlock read of node 0's store) with the node's Booking and the learners to wake
since its last answer, so a slow node gets fewer, fresher answers, never a queue of old ones.
A node that has heard nothing for KEEPALIVE_S gets a keepalive (relays send them too), so no
blocking receive of a healthy job ever reaches the group timeout. A model's tables go up as the
rows of each gradient and down as the rows written since the node's previous answer (each row
marked with the version that last wrote it), never as whole tables.

Liveness: a node whose heartbeat has not moved for half of ``--dist-timeout``, or whose
connection broke, is lost. Under ``--on-node-failure continue`` its learners are retired (if the
rest can still make K) and the job goes on; otherwise every other node gets END naming it and
this process raises NodeError.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Iterator

import torch

from ...errors import NodeError
from ...strategies.nodes import finished
from ...strategies.server import Arrival, Decision, KAggregator
from ..context import Context
from ..control import DONE_VOTE, HALT_VOTE, Booking
from ..loops.applier_io import LocalIO
from ..mailbox import RING, GradientMailbox
from ..store import SeqlockStore
from ..wakeups import WakeUps
from .exchange import initial_broadcast
from .link import NodeLink, connect, first_line
from .wire import (
    BYE,
    END,
    END_DONE,
    END_HALT,
    END_LOST,
    GRAD,
    KEEPALIVE,
    PARAMS,
    VOTE,
    DownMessage,
    Rows,
    UpMessage,
    pack_rows,
)

BOOK_COLUMNS = ("applied", "stale_sum", "stale_max", "dropped")   # the arena's "node_book" rows


def keepalive_s(timeout: float) -> float:
    return min(1.0, timeout / 4)


@dataclass
class _Due:
    """What one remote node has coming in its next answer."""

    booking: Booking = field(default_factory=Booking)
    release: set[int] = field(default_factory=set)
    dirty: bool = False
    end: tuple[int, int] | None = None


class GlobalIO(LocalIO):
    """Node 0's applier serving every node (an :class:`~shmopt.engine.loops.applier_io.ApplierIO`)."""

    def __init__(self, ctx: Context, store: SeqlockStore, mailbox: GradientMailbox,
                 wakeups: WakeUps, agg: KAggregator) -> None:
        super().__init__(ctx, mailbox, wakeups)
        self.store, self.agg = store, agg
        self.link: NodeLink | None = None
        np_ = ctx.plan.nodes
        self.P, self.nnodes, self.timeout = ctx.plan.workers, np_.nnodes, np_.timeout
        self.carry_on = np_.on_failure == "continue"
        self.remote = list(range(1, self.nnodes))          # remote nodes still in the job
        n = store.x.numel()
        size = (self.nnodes - 1) * self.P * RING + 2
        tables = ctx.plan.tables
        self.pool = [UpMessage(n, mailbox.params_read is not None, tables) for _ in range(size)]
        # a model's tables: the version each row was last written at (the answers send the rows
        # written since the node's previous answer, never a whole table)
        self.marks = [torch.zeros(t.rows, dtype=torch.int64) for t in tables]
        self._dims = [t.dim for t in tables]
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(size):
            self._free.put(i)
        self._arrived: deque[Arrival] = deque()
        self.votes: dict[int, int] = {}
        self._byes: set[int] = set()
        self._errors: dict[int, BaseException] = {}        # node (-1: the receiver) -> failure
        self._cond = threading.Condition()
        self._due = {r: _Due() for r in self.remote}
        self._n, self.received = n, 0
        # per remote node, each written by its sender thread only
        self.sent, self.sent_bytes, self.send_s = [0] * self.nnodes, [0] * self.nnodes, [0.0] * self.nnodes
        self.rows = ctx.arena.array("node_book")
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ the job's start and end
    def __enter__(self) -> "GlobalIO":
        """Meet the other nodes, give them node 0's parameters and version, start the threads."""
        try:
            self.link = connect(self.ctx)
            initial_broadcast(self.link, [self.store.x, *self.ctx.tables,
                                          torch.tensor([self.store.version()])])
            self.start()
        except BaseException:
            self.__exit__(*sys.exc_info())         # leave the group, say the link is not done
            raise
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        """The job ends: END to every node and their BYEs (after a clean end of the applier)."""
        clean = False
        try:
            if exc_type is None and self.link is not None:
                self.end(self.reason())
                plan, glob = self.ctx.plan, self.ctx.glob
                if not glob["finish"] and (plan.steps is None or self.store.version() < plan.steps):
                    glob["peer_finish"] = 1          # another node ended the job
                clean = self.clean
        finally:
            if self.link is not None:
                self.link.close(clean)
            self.ctx.glob["link_done"] = int(clean)

    # ------------------------------------------------------------ threads
    def start(self) -> None:
        self._threads = [threading.Thread(target=self._receive, name="shmopt-receive", daemon=True)]
        self._threads += [threading.Thread(target=self._answer, args=(r,), name=f"shmopt-answer-{r}",
                                           daemon=True) for r in self.remote]
        for t in self._threads:
            t.start()

    def _receive(self) -> None:
        P = self.P
        while not set(self.remote) <= self._byes:
            i = self._free.get()
            msg = self.pool[i]
            try:
                self.link.recv(msg.buf)
            except Exception as exc:  # noqa: BLE001 - reported by check() in the main thread
                self._errors[-1] = exc
                self.wakeups.notify_push()
                return
            kind, node, rank, version, vote = msg.fields
            self.received += 1
            if kind == GRAD and node in self.remote:
                self._arrived.append(Arrival(node * P + rank, version, i))
                self.wakeups.notify_push()
                continue
            self._free.put(i)
            if kind == VOTE:
                self.votes[node] = vote
            elif kind == BYE:
                self._byes.add(node)
            if kind != KEEPALIVE:
                self.wakeups.notify_push()

    def _answer(self, r: int) -> None:
        msg, due = DownMessage(self._n, self.P, len(self.marks)), self._due[r]
        wait = keepalive_s(self.timeout)
        seen = self.store.version()                # the node has the tables of this version
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: due.dirty or due.end is not None or r not in self.remote,
                                        timeout=wait)
                    if r not in self.remote:
                        return
                    kind = END if due.end is not None else PARAMS if due.dirty else KEEPALIVE
                    booking, release, end = due.booking, due.release, due.end or (0, -1)
                    due.booking, due.release, due.dirty = Booking(), set(), False
                rows: list = []
                if kind == KEEPALIVE:
                    version = self.store.version()
                else:                              # rows marked after `seen`, scanned outside the
                    now = self.store.version()     # seqlock: a write during the scan marks its rows
                    picked = [(mark > seen).nonzero().view(-1) for mark in self.marks]   # > now
                    version = self.store.read(msg.x, partial(self._values, rows, picked) if picked else None)
                    seen = now
                msg.pack(kind, version, booking, release, *end)
                msg.row_counts = [i.numel() for i, _ in rows] or [0] * len(self.marks)
                self.send_s[r] += self.link.send(msg.buf, r)
                self.sent[r] += 1
                self.sent_bytes[r] += msg.nbytes
                if any(msg.row_counts):            # the rows written since, in a message of their size
                    wire = pack_rows(rows)
                    self.send_s[r] += self.link.send(wire, r)
                    self.sent_bytes[r] += wire.numel() * 4
                if kind == END:
                    return
        except Exception as exc:  # noqa: BLE001 - the node is lost; check() decides
            self._errors[r] = exc
            self.wakeups.notify_push()

    def _values(self, rows: list, picked: list[torch.Tensor]) -> None:
        """Into ``rows``: each table's ``picked`` rows and their values (run under the store's
        seqlock read, so they belong to the version it returns)."""
        rows[:] = [(idx, table.index_select(0, idx)) for idx, table in zip(picked, self.ctx.tables)]

    # ------------------------------------------------------------ the applier's inbox
    def arrivals(self) -> Iterator[Arrival]:
        yield from super().arrivals()
        while self._arrived:
            yield self._arrived.popleft()

    def _local(self, a: Arrival) -> bool:
        return a.rank < self.P

    def grad(self, a: Arrival) -> torch.Tensor:
        return self.mailbox.grad(a) if self._local(a) else self.pool[a.slot].grad

    def params_of(self, a: Arrival) -> torch.Tensor | None:
        return self.mailbox.params_of(a) if self._local(a) else self.pool[a.slot].params

    def table_rows(self, a: Arrival) -> Rows:
        return self.mailbox.rows_of(a) if self._local(a) else self.pool[a.slot].rows()

    def combine_rows(self, rows: list[Rows]) -> Rows:
        """As one node's (the K gradients' row mean), each row marked with the version about to be
        written, so the next answer to every node carries it."""
        out = super().combine_rows(rows)
        version = self.store.version() + 1           # the single writer's next version
        for mark, (idx, _) in zip(self.marks, out):
            mark.index_fill_(0, idx, version)
        return out

    def consume(self, a: Arrival) -> None:
        if self._local(a):
            self.mailbox.consume(a)
        else:
            self._free.put(a.slot)

    # ------------------------------------------------------------ the applier's answers
    def refused(self, a: Arrival, wake: bool) -> None:
        """A gradient dropped (stale, obsolete); ``wake`` its learner if it waits for a release."""
        node, rank = divmod(a.rank, self.P)
        self.rows[node, 3] += 1
        if node == 0:
            if wake:
                self.wakeups.release(rank)
            return
        with self._cond:
            due = self._due.get(node)
            if due is not None:
                due.booking.dropped += 1
                if wake:
                    due.release.add(rank)
                    due.dirty = True
                self._cond.notify_all()

    def published(self, d: Decision, lr: float) -> None:
        """An update was applied: book it per node, wake node 0's learners, mark the answers due."""
        P = self.P
        for a, tau in zip(d.batch, d.staleness):
            row = self.rows[a.rank // P]
            row[0] += 1
            row[1] += tau
            row[2] = max(int(row[2]), tau)
        for r in d.release:
            if r < P:
                self.wakeups.release(r)
        with self._cond:
            for a, tau in zip(d.batch, d.staleness):
                if (due := self._due.get(a.rank // P)) is not None:
                    due.booking.add(tau, lr)
                    due.dirty = True
            for r in d.release:
                if (due := self._due.get(r // P)) is not None:
                    due.release.add(r % P)
                    due.dirty = True
            self._cond.notify_all()
        glob = self.ctx.glob
        glob["exchanges"] = self.received + sum(self.sent)
        glob["wire_bytes"] = sum(self.sent_bytes)
        glob["comm_s"] = sum(self.send_s)
        glob["all_updates"] = self.store.version()
        glob["serve_cpu_s"] = time.process_time()

    # ------------------------------------------------------------ the job
    def finished(self) -> bool:
        """Every node voted done, or one halted (strategies.nodes)."""
        votes = [int(self.ctx.glob["finish"])] + [self.votes.get(r, 0) for r in self.remote]
        return finished(sum(v >= DONE_VOTE for v in votes), sum(v >= HALT_VOTE for v in votes), len(votes))

    def reason(self) -> int:
        """Why the job ends, for the END every node gets: a halt vote, or done."""
        votes = [int(self.ctx.glob["finish"]), *self.votes.values()]
        return END_HALT if any(v >= HALT_VOTE for v in votes) else END_DONE

    def check(self) -> None:
        """The applier's wait check: stop, pause, heartbeat, and the remote nodes' liveness."""
        self.ctx.check()
        self.link.beat()
        if -1 in self._errors and self.remote:
            exc = self._errors.pop(-1)
            self._halt(self.remote[0])
            raise self.link.lost(exc, "the receive of gradients")
        lost = {r: f"no heartbeat for {self.timeout / 2:g} s"
                for r in self.link.silent(self.remote, self.timeout / 2)}
        for r, exc in list(self._errors.items()):
            if r in self.remote:
                lost[r] = first_line(exc)
        if lost:
            self._lose(lost)

    def _lose(self, lost: dict[int, str]) -> None:
        names = ", ".join(map(str, sorted(lost)))
        why = "; ".join(f"node {r}: {w}" for r, w in sorted(lost.items()))
        if not self.carry_on:
            self._halt(min(lost), exclude=set(lost))
            raise NodeError(f"lost node {names} ({why}) while the global applier served it "
                            f"(--on-node-failure stop)", tuple(sorted(lost)))
        try:
            gone = self.agg.retire([m * self.P + r for m in lost for r in range(self.P)])
        except ValueError as exc:
            self._halt(min(lost), exclude=set(lost))
            raise NodeError(f"lost node {names} ({why}) and cannot carry on: {exc}",
                            tuple(sorted(lost))) from None
        for a in gone:
            self.rows[a.rank // self.P, 3] += 1
            self.consume(a)
        with self._cond:
            self.remote = [r for r in self.remote if r not in lost]
            self._cond.notify_all()
        self.ctx.glob["nodes_lost"] += len(lost)
        print(f"shmopt: lost node {names} ({why}); carrying on with {1 + len(self.remote)} node(s) "
              f"(--on-node-failure continue)", file=sys.stderr, flush=True)

    def _halt(self, lost: int, exclude: set[int] = frozenset()) -> None:
        """Tell the nodes still here that the job ends because ``lost`` was lost (bounded wait)."""
        with self._cond:
            self.remote = [r for r in self.remote if r not in exclude]
        self.end(END_LOST, lost, wait_s=min(5.0, self.timeout))

    def end(self, reason: int, lost: int = -1, wait_s: float | None = None) -> None:
        """Send every remote node the final parameters and END, then wait (at most ``wait_s``,
        default --dist-timeout) for each one's BYE."""
        with self._cond:
            for r in self.remote:
                self._due[r].end = (reason, lost)
            self._cond.notify_all()
        deadline = time.monotonic() + (self.timeout if wait_s is None else wait_s)
        while not set(self.remote) <= self._byes and time.monotonic() < deadline:
            self.ctx.check_abort()
            self.link.beat()
            for a in self.arrivals():             # too late to apply; frees the senders
                self.consume(a)
            if reason != END_LOST:
                for r in self.link.silent(self.remote, self.timeout / 2):
                    raise NodeError(f"lost node {r} (no heartbeat for {self.timeout / 2:g} s) at the "
                                    f"end of the job", (r,))
            time.sleep(0.002)

    @property
    def clean(self) -> bool:
        """Every remote node said BYE."""
        return set(self.remote) <= self._byes
