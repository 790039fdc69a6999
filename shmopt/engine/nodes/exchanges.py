"""The exchanges the node link can run, by name, and the one a plan needs (:func:`make_exchange`).

* ``"delta"`` (:mod:`.delta`): buffers averaged by their delta — the direct protocol's x (and
  state with ``--sync-state``, DiLoCo's outer step with ``--outer-lr/--outer-momentum``; a
  model's tables by the rows touched since the last exchange, :mod:`.row_delta`), or the
  buffers a replica method names in ``exchanged`` (easgd's centre, local SGD's average);
* ``"leader"`` (:mod:`.leader`): the best replica of all nodes, published to every node.

A replica method names its exchange (``ReplicaMethod.node_exchange``); a new one is one module with
a class that meets :class:`~shmopt.engine.nodes.exchange.Exchange` plus one line in
:data:`EXCHANGES`.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..context import Context
from .delta import DeltaExchange
from .exchange import Exchange
from .leader import LeaderExchange
from .link import NodeLink
from .row_delta import TableDeltaExchange

Factory = Callable[[Context, NodeLink], tuple[Exchange, list[torch.Tensor]]]


def _delta(ctx: Context, link: NodeLink) -> tuple[Exchange, list[torch.Tensor]]:
    plan, b = ctx.plan, ctx.buffers
    method = plan.replicas
    if method is not None:                          # the method's buffers; replicas stay local
        return DeltaExchange(link, [b.extra[name] for name in method.exchanged]), [b.x]
    np_ = plan.nodes
    state = list(b.state.values())                  # per node, unless --sync-state
    bufs = [b.dense] + (state if np_.sync_state else [])
    dense = DeltaExchange(link, bufs, np_.outer_lr, np_.outer_momentum)
    local = [] if np_.sync_state else state
    if not plan.tables:
        return dense, local
    table_state = [t for st in b.table_state for t in st.values()]   # per node, never exchanged
    return TableDeltaExchange(link, dense, b.tables, b.marks, b.glob, np_.outer_lr), local + table_state


def _leader(ctx: Context, link: NodeLink) -> tuple[Exchange, list[torch.Tensor]]:
    b, method, P = ctx.buffers, ctx.plan.replicas, ctx.plan.workers
    losses, counts = b.ctrl["losses"][:P], b.ctrl["loss_count"][:P]
    return LeaderExchange(link, b.x, b.extra[method.leader_buffer], b.glob,
                          lambda: method.local_leader(losses, counts)), []


#: exchange name -> factory of (the exchange, what must start equal on every node but is not exchanged)
EXCHANGES: dict[str, Factory] = {"delta": _delta, "leader": _leader}


def make_exchange(ctx: Context, link: NodeLink) -> tuple[Exchange, list[torch.Tensor]]:
    """The plan's exchange: its replica method's, else the direct protocol's delta."""
    method = ctx.plan.replicas
    return EXCHANGES[method.node_exchange if method is not None else "delta"](ctx, link)
