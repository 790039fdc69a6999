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


class UpMessage:
    def __init__(self, n: int, with_params: bool) -> None:
        h = 2 * _UP_INTS
        self.buf = torch.zeros(h + n * (2 if with_params else 1))
        self.head = self.buf[:h].view(torch.int64)
        self.grad = self.buf[h:h + n]
        self.params = self.buf[h + n:] if with_params else None

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
    def __init__(self, n: int, workers: int) -> None:
        self.workers = workers
        ni = _DOWN_INTS + workers
        self.buf = torch.zeros(2 * (ni + _DOWN_FLOATS) + n)
        self.ints = self.buf[:2 * ni].view(torch.int64)
        self.floats = self.buf[2 * ni:2 * (ni + _DOWN_FLOATS)].view(torch.float64)
        self.x = self.buf[2 * (ni + _DOWN_FLOATS):]

    def pack(self, kind: int, version: int, booking: Booking, release: set[int] | list[int],
             end: int = 0, lost: int = -1) -> "DownMessage":
        """Fill the header (the payload ``x`` is written by the caller)."""
        b = booking
        flags = [1 if r in release else 0 for r in range(self.workers)]
        self.ints[:] = torch.tensor([kind, version, end, lost, b.applied, b.stale_sum, b.stale_max,
                                     b.dropped, *b.hist, *flags])
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
        flags = self.ints[_DOWN_INTS:].tolist()
        return [r for r, f in enumerate(flags) if f]

    @property
    def nbytes(self) -> int:
        return self.buf.numel() * 4
