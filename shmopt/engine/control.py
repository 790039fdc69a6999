"""The control block: lock-free counters in shared memory, one single-writer slot per process.

Every engine process (the learners, and rank P in the last slot: engine.roles) owns one :data:`SLOT`
record and is its only writer, so no increment is ever lost (a shared ``+= 1`` from several
processes loses updates). Slots are padded to 512 bytes: two workers never write the same cache
line, nor an adjacent line pair (the spatial prefetcher fetches lines in pairs). The supervisor and
other workers read without locks; 8-byte aligned fields are read whole on every platform we support.

The :data:`GLOBAL` record has one writer per field: the supervisor (``stop``, ``pause``, ``t_go``;
``k`` under ``--k adaptive``; ``finish`` when this node is done), rank P (the applier or relay:
``version``, ``seq``; the node link, relay or applier across nodes: the node figures, ``finish``
after a peer's vote, ``peer_finish``, ``link_done``, the published global leader).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..memory.layout import HOST
from ..strategies.leader import LOSS_WINDOW

HIST_BINS = 16     # staleness histogram: bin 0 = 0, bin b = [2^(b-1), 2^b - 1], last bin open


def _padded(fields: list[tuple], size: int) -> np.dtype:
    dt = np.dtype(fields, align=True)
    if dt.itemsize > size:
        raise AssertionError(f"control slot needs {dt.itemsize} > {size} bytes")
    return np.dtype(fields + [("_pad", "u1", (size - dt.itemsize,))] if size > dt.itemsize else fields,
                    align=True)


# status codes
STARTING, READY, RUNNING, DONE, FAILED, PAUSED = 0, 1, 2, 3, 4, 5
PAUSE_ALL, PAUSE_APPLIER = 1, 2     # glob['pause']: who waits at its next check

SLOT = _padded([
    ("pid", "i8"),
    ("status", "i8"),
    ("updates", "i8"),          # updates this process applied to the shared parameters
    ("applied", "i8"),          # gradients this process applied (K per update in K-of-P)
    ("pushed", "i8"),           # server protocols: gradients written into this learner's slots
    ("grads", "i8"),            # gradients computed and offered (pushed or applied)
    ("dropped", "i8"),          # gradients refused: staler than max_staleness, or obsolete
    ("cancelled", "i8"),        # gradients abandoned because a synchronous update overtook them
    ("nonfinite", "i8"),        # gradients or losses that were NaN/Inf, never applied
    ("samples", "i8"),          # training samples consumed
    ("version_read", "i8"),     # version of the parameters the current gradient is computed on
    ("stale_sum", "i8"),        # staleness of the gradients this process applied: sum, max, hist
    ("stale_max", "i8"),
    ("loss_count", "i8"),       # losses written so far into the ring `losses`
    ("pulls", "i8"),            # replica protocol: couplings (pulls, elastic exchanges, averagings)
    ("heartbeat", "f8"),        # time.time() of the last sign of life
    ("compute_s", "f8"),        # seconds per offered mini-batch outside the injected delay: read,
    ("timed", "i8"),            #   sample, forward, backward, bookkeeping (timed batches: `timed`)
    ("t_ready", "f8"),
    ("idle", "i8"),             # 1 while waiting on a wake-up with no device work in flight
    ("own_start", "i8"),        # replica protocol: 1 once this worker's replica holds its own start
                                #   (--replica-init independent), kept by checkpoints and restarts
    ("rows", "i8"),             # table rows this process updated (distinct rows per update, summed)
    ("lr_sum", "f8"),           # learning rates actually used: sum, min, max
    ("lr_min", "f8"),
    ("lr_max", "f8"),
    ("s_epoch", "i8"),          # --sampling shuffle/shard: permutations begun, rows in this learner's
    ("s_len", "i8"),            #   order (layout.ORDER), rows of it handed out (strategies.sampling)
    ("s_off", "i8"),
    ("stale_hist", "i8", (HIST_BINS,)),
    ("losses", "f8", (LOSS_WINDOW,)),
], 512)

GLOBAL = _padded([
    ("stop", "i8"),             # supervisor: 1 = every process stops at its next check
    ("version", "i8"),          # server protocols: the applied update count (the applier or relay)
    ("seq", "i8"),              # server protocols: seqlock, odd while the parameters are written
    ("t_go", "f8"),             # supervisor: time.time() when training started
    ("pause", "i8"),            # supervisor (checkpoints): PAUSE_ALL = every process waits at its next
                                # check, PAUSE_APPLIER = rank P only (the learners go on)
    # across nodes (written by the node link, or by the applier of sync; ``finish`` also by the
    # supervisor): the learners stop on ``finish``, the link runs the final exchange, then says
    # ``link_done``
    ("finish", "i8"),           # 0 running, DONE_VOTE: this node is done, HALT_VOTE: stop all nodes
    ("peer_finish", "i8"),      # 1 when another node ended the job
    ("link_done", "i8"),
    ("exchanges", "i8"),
    ("comm_s", "f8"),           # seconds collectives were in flight
    ("wire_bytes", "i8"),       # payload bytes this node handed to collectives
    ("node_stale_sum", "i8"),   # per exchange: local updates the other nodes had not seen
    ("node_stale_max", "i8"),
    ("all_updates", "i8"),      # updates over all nodes, at the last exchange
    ("gl_version", "i8"),       # lsgd: global leaders published; which half of `gleader` holds it
    ("gl_index", "i8"),
    ("gl_node", "i8"),
    ("gl_worker", "i8"),
    ("gl_score", "f8"),
    ("local_score", "f8"),      # lsgd: this node's local leader's score at the last exchange
    ("serve_cpu_s", "f8"),      # the global applier: its process's CPU seconds so far
    ("nodes_lost", "i8"),       # the global applier: nodes it carried on without
    ("k", "i8"),                # supervisor: the K in force under --k adaptive (the applier reads
], 256)                         #   it before each decision)

# votes in GLOBAL.finish
DONE_VOTE, HALT_VOTE = 1, 2
#: fields of GLOBAL that belong to one run and start at 0 again on a resume
RUN_FIELDS = ("stop", "pause", "seq", "finish", "peer_finish", "link_done", "gl_version", "gl_index")


def staleness_bin(tau: int) -> int:
    """Histogram bin of a staleness: 0 -> 0, 1 -> 1, 2-3 -> 2, 4-7 -> 3, ...; capped."""
    return min(int(tau).bit_length(), HIST_BINS - 1)


def bin_label(b: int) -> str:
    if b == 0:
        return "0"
    lo, hi = 1 << (b - 1), (1 << b) - 1
    if b == HIST_BINS - 1:
        return f"{lo}+"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def specs(processes: int) -> list[tuple]:
    """Arena entries of the control block: always host memory, whatever the arena's device."""
    return [("glob", (1,), GLOBAL, HOST), ("ctrl", (processes,), SLOT, HOST)]


@dataclass
class Booking:
    """Gradients applied (staleness, rate) and dropped, tallied away from their control slot: the
    global applier tallies each node's and sends it with the node's next reply, where the node's
    relay merges it into its own slot (:meth:`Counters.book`)."""

    applied: int = 0
    stale_sum: int = 0
    stale_max: int = 0
    dropped: int = 0
    lr_sum: float = 0.0
    lr_min: float = math.inf
    lr_max: float = 0.0
    hist: list[int] = field(default_factory=lambda: [0] * HIST_BINS)

    def add(self, tau: int, lr: float) -> None:
        self.applied += 1
        self.stale_sum += tau
        self.stale_max = max(self.stale_max, tau)
        self.hist[staleness_bin(tau)] += 1
        self.lr_sum += lr
        self.lr_min, self.lr_max = min(self.lr_min, lr), max(self.lr_max, lr)

    def __bool__(self) -> bool:
        return bool(self.applied or self.dropped)


class Counters:
    """One process's own control slot: the only writer of every field (no lock, no lost update).
    The loops book through these methods instead of indexing the record by field name."""

    def __init__(self, slot: np.void) -> None:
        self.slot = slot

    def __getitem__(self, name: str):
        return self.slot[name]

    def set_status(self, status: int) -> None:
        self.slot["status"] = status

    def heartbeat(self) -> float:
        now = time.time()
        self.slot["heartbeat"] = now
        return now

    def gradient(self, batch_size: int, loss: float) -> None:
        """One mini-batch computed: its loss goes into the ring the leader is chosen from."""
        s = self.slot
        s["grads"] += 1
        s["samples"] += batch_size
        s["losses"][s["loss_count"] % LOSS_WINDOW] = loss
        s["loss_count"] += 1

    def timed(self, seconds: float) -> None:
        self.slot["compute_s"] += seconds
        self.slot["timed"] += 1

    def applied(self, tau: int, lr: float) -> None:
        """One gradient applied with staleness ``tau`` at rate ``lr``; the caller counts
        :meth:`update` (one per change of the parameters; K gradients per update in K-of-P)."""
        s = self.slot
        s["stale_sum"] += tau
        if tau > s["stale_max"]:
            s["stale_max"] = tau
        s["stale_hist"][staleness_bin(tau)] += 1
        s["lr_sum"] += lr
        if s["applied"] == 0 or lr < s["lr_min"]:
            s["lr_min"] = lr
        if lr > s["lr_max"]:
            s["lr_max"] = lr
        s["applied"] += 1

    def book(self, b: Booking) -> None:
        """Merge a tally of gradients applied and dropped elsewhere (a node's relay)."""
        if not b:
            return
        s = self.slot
        if b.applied:
            if s["applied"] == 0 or b.lr_min < s["lr_min"]:
                s["lr_min"] = b.lr_min
            s["lr_max"] = max(float(s["lr_max"]), b.lr_max)
            s["stale_max"] = max(int(s["stale_max"]), b.stale_max)
            s["stale_sum"] += b.stale_sum
            s["lr_sum"] += b.lr_sum
            s["stale_hist"] += np.asarray(b.hist, dtype=np.int64)
            s["applied"] += b.applied
        s["dropped"] += b.dropped

    def update(self) -> None:
        self.slot["updates"] += 1

    def rows(self, n: int) -> None:
        """``n`` table rows updated by the update just applied."""
        self.slot["rows"] += n

    def count(self, what: str) -> None:
        """One more ``dropped``, ``cancelled``, ``nonfinite`` or ``pulls``."""
        self.slot[what] += 1
