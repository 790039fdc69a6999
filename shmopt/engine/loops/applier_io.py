"""The applier's IO: where its gradients come from and where its answers go.

The applier (loops/applier.py) is one loop over :class:`ApplierIO`; three implementations:

* :class:`LocalIO` — one node: the node's gradient mailbox and wake-ups;
* ``ReducingIO`` (engine.nodes.reducing_io) — ``sync`` across nodes: as LocalIO, but the mean
  gradient is all-reduced over every node's gradients before each update;
* ``GlobalIO`` (engine.nodes.global_io) — the global applier on node 0 (the other server
  protocols across nodes): node 0's mailbox plus every other node's gradients, sent by their
  relays, and answers to those nodes.

:func:`~shmopt.engine.nodes.applier_io.open_io` picks the plan's; an IO is a context manager: entering
it meets the other nodes and gives every node node 0's start, leaving it ends the job with them."""
from __future__ import annotations

from typing import Callable, Iterable, Protocol

import torch

from ...rules import union
from ...rules.consensus import average_into
from ...strategies.server import Arrival, Decision, KAggregator
from ..context import Context
from ..mailbox import GradientMailbox
from ..store import SeqlockStore
from ..tables import Rows
from ..wakeups import WakeUps


class ApplierIO(Protocol):
    """The applier's side of the transport.

    Contract: :meth:`arrivals` yields each pushed gradient once, in arrival order per learner;
    :meth:`grad` (and :meth:`params_of`, the parameters it was read at, or None) stay valid until
    :meth:`consume` frees the gradient, which happens exactly once per arrival; so do its table
    rows (:meth:`table_rows`: per table, unique indices and values; empty for a model without tables).
    :meth:`combine_rows` does the same for the tables' rows (per gradient, per table: indices and
    values), after :meth:`combine`, so across nodes it can use that collective's count.
    :meth:`combine` turns the K chosen gradients into the one the rule applies (the mean; across nodes with
    ``sync``, the mean over every node's). :meth:`refused` and :meth:`published` carry the
    strategy's decisions to the learners (wake-ups, answers to other nodes, per-node books);
    :meth:`finished` says the job ended with this update (across nodes); :meth:`check` is the
    applier's wait check (stop flag, heartbeat, lost nodes)."""

    def __enter__(self) -> "ApplierIO": ...
    def __exit__(self, *exc: object) -> None: ...
    def arrivals(self) -> Iterable[Arrival]: ...
    def grad(self, a: Arrival) -> torch.Tensor: ...
    def table_rows(self, a: Arrival) -> list[tuple[torch.Tensor, torch.Tensor]]: ...
    def params_of(self, a: Arrival) -> torch.Tensor | None: ...
    def consume(self, a: Arrival) -> None: ...
    def combine(self, grads: list[torch.Tensor], version: int) -> torch.Tensor: ...
    def combine_rows(self, rows: list[Rows]) -> Rows: ...
    def refused(self, a: Arrival, wake: bool) -> None: ...
    def published(self, d: Decision, lr: float) -> None: ...
    def finished(self) -> bool: ...
    def check(self) -> None: ...


class LocalIO:
    """The applier's gradients and answers inside one node."""

    def __init__(self, ctx: Context, mailbox: GradientMailbox, wakeups: WakeUps) -> None:
        self.ctx, self.mailbox, self.wakeups = ctx, mailbox, wakeups
        self._acc: torch.Tensor | None = None

    def arrivals(self) -> Iterable[Arrival]:
        return self.mailbox.arrivals()

    def grad(self, a: Arrival) -> torch.Tensor:
        return self.mailbox.grad(a)

    def params_of(self, a: Arrival) -> torch.Tensor | None:
        return self.mailbox.params_of(a)

    def table_rows(self, a: Arrival) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.mailbox.rows_of(a) if self.mailbox.rows is not None else []

    def consume(self, a: Arrival) -> None:
        self.mailbox.consume(a)

    def __enter__(self) -> "LocalIO":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def check(self) -> None:
        self.ctx.check()

    def combine(self, grads: list[torch.Tensor], version: int) -> torch.Tensor:
        if len(grads) == 1:
            return grads[0]
        if self._acc is None:
            self._acc = torch.zeros_like(grads[0])
        return average_into(self._acc, grads)

    def combine_rows(self, rows: list[Rows]) -> Rows:
        """Per table, the coalesced mean of the gradients' rows (a row two learners touched is
        summed once, then divided by K like the dense gradient)."""
        return [union(parts, 1.0 / len(rows)) for parts in zip(*rows)]

    def refused(self, a: Arrival, wake: bool) -> None:
        if wake:
            self.wakeups.release(a.rank)

    def published(self, d: Decision, lr: float) -> None:
        for r in d.release:
            self.wakeups.release(r)

    def finished(self) -> bool:
        return False


#: (context, wake-ups, store, mailbox, aggregator) -> the plan's IO, not yet entered
OpenIO = Callable[[Context, WakeUps, SeqlockStore, GradientMailbox, KAggregator], ApplierIO]
