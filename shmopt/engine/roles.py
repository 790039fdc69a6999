"""Who each engine process is, defined once.

Ranks ``0 .. P-1`` are the **learners** (P = ``plan.workers``); they run the loop of the plan's
protocol (``direct``, ``server`` or ``replicas``). Rank ``P`` exists when the plan needs one more
process, and is

* the **applier** of server protocols on one node, of ``sync`` across nodes (which all-reduces
  the node's gradients), and on node 0 of the other server protocols across nodes (the *global*
  applier, serving every node's learners);
* a **relay** on every other node of those server protocols (forwards gradients to node 0);
* the **node link** of direct and replica protocols across nodes (runs the exchanges).

The control block has one slot per process (:func:`processes`), the last one rank P's.
"""
from __future__ import annotations

from ..plan import Plan

APPLIER, RELAY, LINK = "applier", "relay", "link"


def is_learner(rank: int, plan: Plan) -> bool:
    return rank < plan.workers


def last_role(plan: Plan) -> str | None:
    """The role of rank P, or None when the plan runs learners only."""
    if plan.server is not None:
        return RELAY if plan.server.global_applier and plan.nodes.rank > 0 else APPLIER
    return LINK if plan.nodes is not None else None


def processes(plan: Plan) -> int:
    """Engine processes: the learners, plus rank P when there is one."""
    return plan.workers + (last_role(plan) is not None)


def role(rank: int, plan: Plan) -> str:
    """The loop rank ``rank`` runs: the protocol's for a learner, else rank P's role."""
    return plan.protocol if is_learner(rank, plan) else last_role(plan)  # type: ignore[return-value]


def role_name(plan: Plan) -> str | None:
    """What rank P is called in messages and in ``shmopt top``."""
    last = last_role(plan)
    if last == APPLIER:
        return "global applier" if plan.server.global_applier else "server"
    return {RELAY: "relay", LINK: "node link", None: None}[last]


def name_of(rank: int, plan: Plan) -> str:
    """``worker R`` or rank P's name."""
    return f"worker {rank}" if is_learner(rank, plan) else role_name(plan) or f"rank {rank}"
