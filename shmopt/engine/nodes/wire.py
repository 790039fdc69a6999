"""The messages between a node's relay and the global applier (server protocols across nodes).

Every message is one float32 tensor of a fixed size (a gloo receive needs a buffer of the
message's exact size). Header integers travel reinterpreted as int64 and rates as float64, so no
version or count is ever rounded.

* :class:`UpMessage` (relay -> global applier): kind, node, learner rank, the version the
  gradient was computed on, the node's vote; payload: the gradient (with the dutta policy also the
  parameters it was read at). Kinds: ``GRAD``, ``KEEPALIVE`` (nothing sent for a while),
  ``VOTE`` (this node is done or halts the job), ``BYE`` (the node's last message).
* :class:`DownMessage` (global applier -> relay): kind, the global version, why the job ended,
  which node was lost, the node's :class:`~shmopt.engine.control.Booking` since its last reply
  and which of its learners to wake; payload: the parameters at that version. Kinds: ``PARAMS``,
  ``KEEPALIVE``, ``END``.

A model's tables travel as rows. An UpMessage carries each table's rows of the gradient in a
section of fixed capacity (``Table.slot_rows``: what a mailbox slot holds). A DownMessage's header
says how many rows of each table changed since the node's previous answer; when any did, a second
message of exactly that size follows (:func:`pack_rows`), so an answer never costs a whole table.
"""
from __future__ import annotations

import torch

from ..control import HIST_BINS, Booking

GRAD, KEEPALIVE, VOTE, BYE = 1, 2, 3, 4          # up (KEEPALIVE also down)
PARAMS, END = 1, 3                                # down
END_DONE, END_HALT, END_LOST = 1, 2, 3            # why the job ended (DownMessage.end)

_UP_INTS = 6                                      # kind, node, rank, version, vote, spare
_DOWN_INTS = 8 + HIST_BINS                        # kind, version, end, lost, applied, stale sum/max, dropped
_DOWN_FLOATS = 3                                  # lr sum, min, max


Rows = list[tuple[torch.Tensor, torch.Tensor]]     # per table: row indices (int64), values


class UpMessage:
    def __init__(self, n: int, with_params: bool, tables: tuple = ()) -> None:
        h = 2 * _UP_INTS
        dense = h + n * (2 if with_params else 1)
        at = dense + dense % 2                      # int64 views need an even float offset
        sections = [_even(2 + t.slot_rows * (2 + t.dim)) for t in tables]   # count, indices, values
        self.buf = torch.zeros(at + sum(sections))
        self.head = self.buf[:h].view(torch.int64)
        self.grad = self.buf[h:h + n]
        self.params = self.buf[h + n:h + 2 * n] if with_params else None
        self._rows = []                             # per table: (count, indices, values) views
        for t, size in zip(tables, sections):
            k = t.slot_rows
            self._rows.append((self.buf[at:at + 2].view(torch.int64),
                               self.buf[at + 2:at + 2 + 2 * k].view(torch.int64),
                               self.buf[at + 2 + 2 * k:at + 2 + k * (2 + t.dim)].view(k, t.dim)))
            at += size

    def put_rows(self, rows: Rows) -> None:
        """The gradient's rows (each table's at most ``slot_rows``, as its mailbox slot)."""
        for (count, idx, values), (i, v) in zip(self._rows, rows):
            count[0] = i.numel()
            idx[:i.numel()] = i
            values[:i.numel()] = v

    def rows(self) -> Rows:
        """The rows received (views of the message)."""
        return [(idx[:int(count[0])], values[:int(count[0])]) for count, idx, values in self._rows]

    def pack(self, kind: int, node: int, rank: int = -1, version: int = -1, vote: int = 0) -> "UpMessage":
        self.head[:5] = torch.tensor([kind, node, rank, version, vote])
        return self

    @property
    def fields(self) -> tuple[int, int, int, int, int]:
        """(kind, node, rank, version, vote)."""
        k, node, rank, version, vote = (int(v) for v in self.head[:5].tolist())
        return k, node, rank, version, vote

    @property
    def nbytes(self) -> int:
        return self.buf.numel() * 4


class DownMessage:
    def __init__(self, n: int, workers: int, tables: int = 0) -> None:
        self.workers, self.tables = workers, tables
        ni = _DOWN_INTS + workers + tables          # + the rows of each table that follow
        self.buf = torch.zeros(2 * (ni + _DOWN_FLOATS) + n)
        self.ints = self.buf[:2 * ni].view(torch.int64)
        self.floats = self.buf[2 * ni:2 * (ni + _DOWN_FLOATS)].view(torch.float64)
        self.x = self.buf[2 * (ni + _DOWN_FLOATS):]

    def pack(self, kind: int, version: int, booking: Booking, release: set[int] | list[int],
             end: int = 0, lost: int = -1) -> "DownMessage":
        """Fill the header (the payload ``x`` is written by the caller)."""
        b = booking
        flags = [1 if r in release else 0 for r in range(self.workers)]
        self.ints[:self.ints.numel() - self.tables] = torch.tensor(
            [kind, version, end, lost, b.applied, b.stale_sum, b.stale_max, b.dropped, *b.hist, *flags])
        self.floats[:] = torch.tensor([b.lr_sum, b.lr_min if b.applied else 0.0, b.lr_max],
                                      dtype=torch.float64)
        return self

    @property
    def kind(self) -> int:
        return int(self.ints[0])

    @property
    def version(self) -> int:
        return int(self.ints[1])

    @property
    def end(self) -> tuple[int, int]:
        """(why the job ended, the lost node or -1)."""
        return int(self.ints[2]), int(self.ints[3])

    def booking(self) -> Booking:
        v = self.ints.tolist()
        lr = self.floats.tolist()
        return Booking(applied=v[4], stale_sum=v[5], stale_max=v[6], dropped=v[7],
                       lr_sum=lr[0], lr_min=lr[1], lr_max=lr[2], hist=v[8:8 + HIST_BINS])

    def release(self) -> list[int]:
        flags = self.ints[_DOWN_INTS:_DOWN_INTS + self.workers].tolist()
        return [r for r, f in enumerate(flags) if f]

    @property
    def row_counts(self) -> list[int]:
        """Rows of each table in the message that follows (none follows when all are 0)."""
        return self.ints[self.ints.numel() - self.tables:].tolist()

    @row_counts.setter
    def row_counts(self, counts: list[int]) -> None:
        if self.tables:
            self.ints[self.ints.numel() - self.tables:] = torch.tensor(counts)

    @property
    def nbytes(self) -> int:
        return self.buf.numel() * 4


def _even(n: int) -> int:
    return n + n % 2


def pack_rows(rows: Rows) -> torch.Tensor:
    """One float32 message of the rows of every table: indices (as int64) then values, per table
    (each table's part padded to an even size, so the next indices can be viewed as int64)."""
    buf = rows_buffer([i.numel() for i, _ in rows], [v.shape[1] for _, v in rows])
    for (i, v), (idx, values) in zip(unpack_rows(buf, [i.numel() for i, _ in rows],
                                                 [v.shape[1] for _, v in rows]), rows):
        i.copy_(idx)
        v.copy_(values)
    return buf


def rows_buffer(counts: list[int], dims: list[int]) -> torch.Tensor:
    """A receive buffer for :func:`pack_rows`'s message of these counts."""
    return torch.zeros(sum(_even(k * (2 + d)) for k, d in zip(counts, dims)))


def unpack_rows(buf: torch.Tensor, counts: list[int], dims: list[int]) -> Rows:
    """The (indices, values) of each table in a :func:`pack_rows` message (views of ``buf``)."""
    out, at = [], 0
    for k, d in zip(counts, dims):
        out.append((buf[at:at + 2 * k].view(torch.int64), buf[at + 2 * k:at + k * (2 + d)].view(k, d)))
        at += _even(k * (2 + d))
    return out
