"""The global applier without a network: the real serve loop and GlobalIO, fed a scripted arrival
order from two nodes (node 0's mailbox and node 1's messages), and the wire format both ways."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from shmopt.config import Config
from shmopt.engine.control import DONE_VOTE, GLOBAL, SLOT, Booking, Counters
from shmopt.engine.loops.applier import serve
from shmopt.engine.nodes.global_io import GlobalIO
from shmopt.engine.nodes.wire import END, END_LOST, GRAD, PARAMS, DownMessage, UpMessage
from shmopt.engine.store import SeqlockStore
from shmopt.plan import resolve
from shmopt.problems import load_problem
from shmopt.strategies.server import Arrival, KAggregator

TCP = dict(nnodes=2, node_rank=0, master="127.0.0.1:29555")


class Mailbox:
    """Node 0's mailbox, scripted."""

    params_read = None

    def __init__(self, n: int) -> None:
        self.queue: list[Arrival] = []
        self.g = torch.ones(n)
        self.consumed: list[Arrival] = []

    def arrivals(self):
        out, self.queue = self.queue, []
        yield from out

    def grad(self, a):
        return self.g

    def params_of(self, a):
        return None

    def consume(self, a):
        self.consumed.append(a)


class Wakeups:
    """wait_push plays the next round of the script; releases are recorded."""

    def __init__(self, rounds, io_ref, mailbox, glob) -> None:
        self.rounds, self.io_ref, self.mailbox, self.glob = list(rounds), io_ref, mailbox, glob
        self.released: list[int] = []

    def wait_push(self, check) -> None:
        io = self.io_ref[0]
        if not self.rounds:                  # the script is over: every node votes done
            self.glob["finish"] = DONE_VOTE
            io.votes[1] = DONE_VOTE
            return
        for node, rank, version in self.rounds.pop(0):
            if node == 0:
                self.mailbox.queue.append(Arrival(rank, version, 0))
            else:
                slot = io._free.get()
                io.pool[slot].pack(GRAD, node, rank, version)
                io._arrived.append(Arrival(node * io.P + rank, version, slot))

    def release(self, rank: int) -> None:
        self.released.append(rank)


def rig(algo: str, rounds, **extra):
    plan = resolve(Config(algo=algo, workers=1, k=1, steps=1000, lr=0.01, **TCP, **extra),
                   load_problem("quadratic", n=64, d=4))
    n = 4
    glob = np.zeros(1, GLOBAL)[0]
    rows = np.zeros((2, 4), np.int64)
    ctx = SimpleNamespace(plan=plan, glob=glob, counters=Counters(np.zeros(1, SLOT)[0]),
                          arena=SimpleNamespace(array=lambda name: rows), check=lambda: None,
                          fence=lambda: None)
    state = {name: torch.zeros(n) for name in plan.rule.state_names}
    plan.rule.init(state)
    store = SeqlockStore(torch.zeros(n), state, glob)
    sp = plan.server
    agg = KAggregator(sp.variant, sp.learners, sp.k, sp.max_staleness)
    mailbox, ref = Mailbox(n), []
    wakeups = Wakeups(rounds, ref, mailbox, glob)
    io = GlobalIO(ctx, store=store, mailbox=mailbox, wakeups=wakeups, agg=agg)   # never entered: no link
    io.check = lambda: None                  # no link: nothing to watch
    ref.append(io)
    serve(ctx, wakeups, store, io, agg)
    return io, store, wakeups, ctx


def test_staleness_across_nodes_is_exact_in_global_versions():
    # k-async, K = 1 over 2 nodes x 1 learner; (node, rank, version read) per round
    rounds = [[(0, 0, 0)], [(0, 0, 1)], [(1, 0, 0)], [(0, 0, 3), (1, 0, 3)], [(1, 0, 4)]]
    io, store, wakeups, ctx = rig("k-async", rounds)
    assert store.version() == 6
    assert io.rows.tolist() == [[3, 0, 0, 0], [3, 2 + 1 + 1, 2, 0]]    # per node: applied, sum, max
    assert ctx.counters["applied"] == 6 and ctx.counters["stale_sum"] == 4      # overall
    due = io._due[1]                          # what node 1's next answer carries
    assert (due.booking.applied, due.booking.stale_sum, due.booking.stale_max) == (3, 4, 2)
    assert due.release == {0} and due.dirty   # k-async wakes the pushers, on their own node
    assert wakeups.released == [0, 0, 0]      # node 0's learner, woken three times
    assert io._free.qsize() == len(io.pool)   # every message buffer is back in the pool


def test_k_sync_across_nodes_releases_every_node_and_drops_the_obsolete():
    # K = 1 of 2: node 0's gradient wins version 0; node 1's, computed on version 0, is obsolete
    rounds = [[(0, 0, 0)], [(1, 0, 0)], [(1, 0, 1)]]
    io, store, wakeups, _ = rig("k-sync", rounds)
    assert store.version() == 2
    assert io.rows.tolist() == [[1, 0, 0, 0], [1, 0, 0, 1]]
    assert io._due[1].booking.dropped == 1 and io._due[1].release == {0}


def test_max_staleness_is_enforced_across_nodes_and_a_refused_learner_is_woken():
    rounds = [[(0, 0, 0)], [(0, 0, 1)], [(0, 0, 2)], [(1, 0, 0)]]     # node 1's is 3 stale
    io, store, wakeups, ctx = rig("apam", rounds, protocol="server", max_staleness=2)
    assert store.version() == 3 and ctx.counters["dropped"] == 1
    assert io.rows[1].tolist() == [0, 0, 0, 1]
    assert io._due[1].release == {0}          # it waits for a release: woken, not stranded


def test_wire_messages_round_trip_exactly():
    up = UpMessage(5, with_params=True).pack(GRAD, 3, 7, 2**40 + 1, vote=2)
    assert up.fields == (GRAD, 3, 7, 2**40 + 1, 2) and up.params is not None
    assert up.buf.numel() == 12 + 10 and up.nbytes == 88
    b = Booking()
    for tau, lr in ((0, 0.1), (5, 0.02), (2**33, 0.05)):
        b.add(tau, lr)
    b.dropped = 4
    down = DownMessage(3, workers=4).pack(END, 2**35, b, {1, 3}, END_LOST, 2)
    down.x.copy_(torch.tensor([1.0, -2.0, 3.5]))
    again = DownMessage(3, workers=4)
    again.buf.copy_(down.buf)                 # what the receiver gets
    assert (again.kind, again.version, again.end, again.release()) == (END, 2**35, (END_LOST, 2), [1, 3])
    got = again.booking()
    assert (got.applied, got.stale_sum, got.stale_max, got.dropped) == (3, 5 + 2**33, 2**33, 4)
    assert got.lr_min == pytest.approx(0.02) and got.lr_max == pytest.approx(0.1)
    assert got.hist == b.hist and torch.equal(again.x, down.x)
    assert DownMessage(3, 4).pack(PARAMS, 1, Booking(), []).booking().applied == 0


def test_counters_book_merges_a_tally_like_applying_each_gradient():
    a, b = Counters(np.zeros(1, SLOT)[0]), Counters(np.zeros(1, SLOT)[0])
    tally = Booking()
    for tau, lr in ((1, 0.1), (0, 0.05), (9, 0.2)):
        a.applied(tau, lr)
        tally.add(tau, lr)
    b.book(tally)
    for f in ("applied", "stale_sum", "stale_max", "lr_min", "lr_max", "lr_sum"):
        assert b[f] == pytest.approx(a[f]), f
    assert b["stale_hist"].tolist() == a["stale_hist"].tolist()
