"""Rules between options: every check of a run's options that needs more than one field, in one
list (a replica method's rules between its own settings live with the method, in
strategies.replicas; K against the learners of every node is checked where the plan counts them).

A field's own check sits on the field (:mod:`shmopt.config`) and runs when the Config is built.
What needs two fields, the algorithm or the node count is a small named function here,
``rule(config, spec, nnodes)`` (``spec``: the algorithm's :class:`~shmopt.strategies.algorithms.AlgoSpec`,
``nnodes``: the job's node count), that raises one ConfigError line; :func:`check` runs
:data:`CROSS_FIELD_RULES` in order and :func:`shmopt.plan.resolve` calls it once, so the CLI, the
Python API and a resumed run refuse a combination with the same message.

What needs the problem (batch size against the rows, a shard per learner, target accuracy against
the metrics) is checked where the problem is known (:mod:`shmopt.plan`, the engine), what needs
the machine (devices, torchrun's environment, output folders) where the run starts; both use
:mod:`shmopt.checks` too.
"""
from __future__ import annotations

from typing import Any, Callable

from . import checks
from .config import Config
from .errors import ConfigError
from .node_plan import ACROSS_NODES
from .strategies.adaptive_k import ADAPTIVE, check_adaptive, parse_k
from .strategies.algorithms import AlgoSpec, family
from .strategies.delays import parse_slow
from .strategies.lr import check_policy_options

#: ``rule(config, spec, nnodes)``: raises ConfigError when the combination is refused.
Rule = Callable[[Config, AlgoSpec, int], None]


def protocol_of(c: Config, spec: AlgoSpec) -> str:
    return c.protocol or spec.protocol


def variant_of(c: Config, spec: AlgoSpec) -> str:
    return "direct" if protocol_of(c, spec) == "direct" else spec.variant


# ------------------------------------------------------------------ the rules
def slow_ranks_within_workers(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    """--slow RANK:FACTOR names a worker of this node."""
    parse_slow(c.slow, c.workers)


def rule_fits_algorithm(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    rule = c.rule or spec.rule
    if rule not in spec.rules:
        raise ConfigError(f"invalid rule={rule!r} for {c.algo}: choose one of {', '.join(spec.rules)}")


def protocol_fits_algorithm(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    protocol = protocol_of(c, spec)
    if protocol not in spec.protocols:
        raise ConfigError(f"invalid protocol={protocol!r} for {c.algo}: choose one of "
                          f"{', '.join(spec.protocols)}")


def lr_policy_options(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    """The dutta policy needs --lr-c; --lr-c/--lr-max belong to dutta."""
    check_policy_options(c.lr_policy, c.lr_c, c.lr_max)


def lr_policy_needs_stale_gradients(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    if c.lr_policy == "constant":
        return
    if protocol_of(c, spec) == "replicas":
        raise ConfigError(f"the {c.lr_policy} lr policy is for stale gradients; {c.algo} replicas "
                          f"take none (use --lr-policy constant)")
    if not spec.asynchronous:
        raise ConfigError(f"the {c.lr_policy} lr policy is for asynchronous algorithms, not {c.algo}")


def k_for_server_protocols(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    if protocol_of(c, spec) != "server" and (c.k is not None or c.k_patience is not None):
        raise ConfigError("--k applies to server protocols only (use --protocol server)")


def adaptive_k_variants(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    """--k adaptive: k-sync and k-async on one node."""
    if protocol_of(c, spec) == "server" and parse_k(c.k) == ADAPTIVE:
        check_adaptive(c.algo, variant_of(c, spec), nnodes)


def k_patience_for_adaptive_k(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    if c.k_patience is not None and parse_k(c.k) != ADAPTIVE:
        raise ConfigError("--k-patience applies to --k adaptive only")


def dutta_reads_snapshots(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    if protocol_of(c, spec) == "direct" and c.lr_policy == "dutta" and c.read == "inplace":
        raise ConfigError("the dutta lr policy needs the parameters a gradient was read at: "
                          "use --read snapshot")


def family_runs_across_nodes(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    if nnodes > 1 and family(c.algo, protocol_of(c, spec), variant_of(c, spec)) not in ACROSS_NODES:
        raise ConfigError(f"{c.algo} does not run across nodes: use one of the families "
                          f"{', '.join(ACROSS_NODES)} with --nnodes > 1")


def node_failure_continue_for_server(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    fam = family(c.algo, protocol_of(c, spec), variant_of(c, spec))
    if nnodes > 1 and c.on_node_failure == "continue" and fam != "server":
        raise ConfigError("--on-node-failure continue is for server protocols across nodes (the "
                          "K-variants, apam/hogwild --protocol server): the collectives of "
                          f"{c.algo} need every node")


def checkpoint_every_needs_checkpoint(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    if c.checkpoint_every is not None and not c.checkpoint:
        raise ConfigError("--checkpoint-every needs --checkpoint FILE")


#: Run in this order; the first refusal is the message.
CROSS_FIELD_RULES: tuple[Rule, ...] = (
    slow_ranks_within_workers,
    rule_fits_algorithm,
    protocol_fits_algorithm,
    lr_policy_options,
    lr_policy_needs_stale_gradients,
    k_for_server_protocols,
    adaptive_k_variants,
    k_patience_for_adaptive_k,
    dutta_reads_snapshots,
    family_runs_across_nodes,
    node_failure_continue_for_server,
    checkpoint_every_needs_checkpoint,
)


def check(c: Config, spec: AlgoSpec, nnodes: int) -> None:
    """Run every cross-field rule (ConfigError: the first refused combination)."""
    for rule in CROSS_FIELD_RULES:
        rule(c, spec, nnodes)


def stored_config(options: Any, path: str) -> Config:
    """The Config a checkpoint recorded (its ``config`` entry, a ``Config.to_dict()``), checked by
    the same field checks as a new run's: an invalid or unknown option is the same one line,
    prefixed by the checkpoint (``checkpoint 'ck.pt': invalid lr=-1.0: must be > 0``)."""
    with checks.scoped(f"checkpoint {path!r}"):
        if not isinstance(options, dict):
            raise ConfigError(f"its configuration is missing or not a dict ({type(options).__name__})")
        return Config.from_dict(options)
