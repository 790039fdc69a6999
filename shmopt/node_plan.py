"""Across machines: which node this run is, how it finds the others, and what the nodes exchange.

A job of N nodes is N ``shmopt run`` processes (one per machine), started by ``torchrun
--nproc-per-node 1`` (its ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` are read here) or
by hand with ``--nnodes N --node-rank R --master HOST:PORT``. Each node option's own check sits on
its Config field, the rules between the node options and the algorithm in
:mod:`shmopt.config_rules`; :func:`resolve_nodes` checks what needs the environment (torchrun's
variables, the rank against the node count) and returns None for a single node (which runs
exactly as before). The engine's node link (``engine/nodes/link_loop.py``) does the exchanges.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from .checks import invalid
from .errors import ConfigError
from .strategies.replicas import REPLICA_METHODS, ReplicaMethod

#: what crosses the network, per family (strategies.algorithms.family); each replica method says
#: its own (ReplicaMethod.across_nodes)
ACROSS_NODES = {
    "direct": "the parameters' delta since the last exchange, averaged every --exchange-every node updates",
    "sync": "the node's summed gradient, all-reduced at every update",
    "server": "each gradient to the global applier on node 0 (K counts worker gradients over all "
              "nodes); the new parameters back to the nodes the update concerns",
    **{m.name: m.across_nodes for m in REPLICA_METHODS.values()},
}
NODE_FAILURE = ("stop", "continue")


@dataclass(frozen=True)
class NodePlan:
    """This node's place in a multi-node job (N >= 2)."""

    nnodes: int
    rank: int
    master: tuple[str, int] | None      # None: torchrun's environment (env:// rendezvous)
    timeout: float                      # seconds before another node counts as lost
    every: int                          # node updates between exchanges (direct, lsgd, easgd)
    outer_lr: float = 1.0
    outer_momentum: float = 0.0
    sync_state: bool = False
    total_steps: int | None = None      # --steps over all nodes (each node runs its share)
    on_failure: str = "stop"            # server protocols: stop, or continue without a lost node

    @property
    def rendezvous(self) -> str:
        """How the nodes meet: ``torchrun`` (its environment) or ``tcp`` (--master)."""
        return "torchrun" if self.master is None else "tcp"


def under_torchrun(env=os.environ) -> bool:
    return "TORCHELASTIC_RUN_ID" in env or ("LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env)


def _env_int(env, name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise ConfigError(f"torchrun environment without a valid {name}: start shmopt with "
                          f"`torchrun --nproc-per-node 1 -m shmopt run ...`") from None


def parse_master(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [ADDR]:PORT) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"invalid master={text!r}: give HOST:PORT with a port in 1..65535 "
                          f"(node 0 listens there)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_path(path: str | None, rank: int) -> str | None:
    """A per-node output file: ``{node}`` in the path is replaced, else ``.node<R>`` goes before
    the extension (``ck.pt`` -> ``ck.node1.pt``), so nodes sharing a file system never collide."""
    if not path:
        return path
    if "{node}" in path:
        return path.replace("{node}", str(rank))
    root, ext = os.path.splitext(path)
    return f"{root}.node{rank}{ext}"


def split_steps(steps: int, nnodes: int, rank: int) -> int:
    """Node ``rank``'s share of ``steps`` updates (the shares sum to ``steps``)."""
    return steps // nnodes + (1 if rank < steps % nnodes else 0)


def nnodes_of(c, env=os.environ) -> int:
    """The job's node count, before the other node options are validated (K counts every node's
    learners, so the server options need it first)."""
    if under_torchrun(env):
        return _env_int(env, "WORLD_SIZE")
    n = c.nnodes
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else 1


def resolve_nodes(c, fam: str, steps: int | None, method: ReplicaMethod | None = None,
                  env=os.environ) -> NodePlan | None:
    """The NodePlan of Config ``c`` in environment ``env`` (``fam``: strategies.algorithms.family;
    ``method``: the replica method, if any); None for a single node. The options' own checks ran
    when ``c`` was built, the cross-field ones in config_rules."""
    nnodes, rank, master = c.nnodes, c.node_rank, None
    if under_torchrun(env):
        if _env_int(env, "LOCAL_WORLD_SIZE") != 1:
            raise ConfigError(f"torchrun --nproc-per-node must be 1 for shmopt (got "
                              f"{env['LOCAL_WORLD_SIZE']}): shmopt starts each node's workers itself "
                              f"(use --workers)")
        world, env_rank = _env_int(env, "WORLD_SIZE"), _env_int(env, "RANK")
        for name, mine, theirs in (("nnodes", nnodes, world), ("node-rank", rank, env_rank)):
            if mine is not None and mine != theirs:
                raise ConfigError(f"invalid {name}={mine}: torchrun says {theirs} (drop the option "
                                  f"under torchrun)")
        nnodes, rank = world, env_rank
        if c.master is not None:
            raise ConfigError("--master is for runs without torchrun: torchrun's --rdzv-endpoint "
                              "already says where the nodes meet")
    nnodes = nnodes or 1
    if nnodes == 1:
        if (rank or 0) != 0 or c.master is not None:
            raise ConfigError("--node-rank and --master need --nnodes >= 2")
        return None
    if not under_torchrun(env):
        if rank is None or c.master is None:
            raise ConfigError(f"--nnodes {nnodes} without torchrun needs --node-rank R and "
                              f"--master HOST:PORT on every node")
        master = parse_master(c.master)
    if rank >= nnodes:
        raise invalid("node-rank", rank, f"must be in 0..{nnodes - 1} (--nnodes {nnodes})")
    if steps is not None and steps < nnodes:
        raise invalid("steps", steps, f"fewer than the {nnodes} nodes")
    every = c.tau_global * c.workers if method is not None else c.exchange_every
    return NodePlan(nnodes, rank, master, float(c.dist_timeout), every, float(c.outer_lr),
                    float(c.outer_momentum), bool(c.sync_state), steps, c.on_node_failure)
