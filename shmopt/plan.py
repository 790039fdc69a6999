"""From a :class:`~shmopt.config.Config` to the :class:`Plan` the engine runs.

:func:`resolve` validates eagerly (before any process or segment exists; each bad option is one
ConfigError naming it and what is accepted): each option's own check already ran when the
:class:`~shmopt.config.Config` was built, :func:`resolve` runs the rules between options
(:mod:`shmopt.config_rules`) and the checks that need the problem or the machine, and resolves
every default and every derived number here, so the engine reads finished values only:
per-protocol sub-plans (:class:`DirectPlan`, :class:`ServerPlan`, the replica method of
strategies.replicas), what each learner needs
(:class:`WorkerPlan`) and what the supervisor needs (:class:`SupervisorPlan`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from . import checks, config_rules
from .config import Config
from .devices import resolve_device, resolve_gpus
from .errors import ConfigError
from .node_plan import NodePlan, nnodes_of, node_path, resolve_nodes, split_steps
from .problems import Problem
from .rules import RULES, RowRule, Rule
from .strategies import LrPolicy, get_algorithm, make_lr_policy
from .strategies.adaptive_k import ADAPTIVE, DEFAULT_PATIENCE, KSchedule, k_ladder, parse_k
from .strategies.algorithms import default_k, family
from .strategies.delays import Delay, parse_delay, parse_slow
from .strategies.replicas import REPLICA_METHODS, ReplicaMethod
from .strategies.sampling import check_sampling
from .strategies.schedules import LrSchedule, parse_schedule
from .strategies.server import KAggregator

DEFAULT_STEPS = 5000


@dataclass(frozen=True)
class WorkerPlan:
    """What every learner process needs, whatever its protocol."""

    seed: int
    threads: int
    pin: bool
    batch_size: int
    check_finite: bool
    stop_on_nonfinite: bool
    delay: Delay
    slow: dict[int, float]
    device: str = "cpu"
    rank_offset: int = 0            # across nodes: node_rank * workers (seeds are seed + offset + rank)
    gpus: tuple[str, ...] = ()      # --gpus > 1: the UUIDs learner r computes on (r mod len)
    sampling: str = "replace"       # strategies.sampling
    learners: int = 1               # learners over all nodes (shards)
    rows: int = 0                   # training rows


@dataclass(frozen=True)
class DirectPlan:
    snapshot: bool                  # read a private copy per gradient (else the shared x in place)
    max_staleness: int | None


@dataclass(frozen=True)
class ServerPlan:
    variant: str                    # k-sync, k-batch-sync, k-async, k-batch-async
    k: int
    max_staleness: int | None
    keep_params_read: bool          # the dutta policy: the parameters each gradient was read at
    learners: int                   # learners K is counted over: P, or N·P for the global applier
    global_applier: bool = False    # across nodes: node 0's applier serves every node (not sync)
    adaptive: KSchedule | None = None   # --k adaptive: K starts at k and rises (strategies.adaptive_k)


@dataclass(frozen=True)
class SupervisorPlan:
    time_limit: float | None
    target_loss: float | None
    eval_interval: float
    eval_samples: int
    heartbeat_timeout: float
    startup_timeout: float
    start_method: str
    restart: bool                   # on_worker_failure == "restart"
    max_restarts: int
    checkpoint: str | None
    checkpoint_every: int | None
    resume: str | None
    log: str | None
    target_accuracy: float | None = None
    keep: int = 1                   # checkpoints kept (engine.checkpoint_files)


@dataclass(frozen=True)
class Plan:
    """A validated configuration with every default resolved."""

    algo: str
    rule: Rule
    protocol: str                   # direct, server or replicas
    variant: str                    # direct, a K-variant, lsgd or easgd
    k: int
    workers: int
    lr: float
    steps: int | None
    lr_policy: LrPolicy
    worker: WorkerPlan
    supervisor: SupervisorPlan
    options: dict                   # the Config as a plain dict (checkpoints record it)
    direct: DirectPlan | None = None
    server: ServerPlan | None = None
    replicas: ReplicaMethod | None = None   # the replica method and its settings
    nodes: NodePlan | None = None   # across machines; None on a single node
    tables: tuple = ()              # the model's tables (table_plan.Table), set by table_plan.with_tables
    table_rule: RowRule | None = None   # their row rule
    schedule: LrSchedule = LrSchedule()  # the base rate against the global update count

    @property
    def batch_size(self) -> int:
        return self.worker.batch_size

    @property
    def train_rows(self) -> int:
        return self.worker.rows

    @property
    def nnodes(self) -> int:
        """Nodes in the job (1 on a single node)."""
        return self.nodes.nnodes if self.nodes else 1

    @property
    def node_rank(self) -> int:
        """This node's rank (0 on a single node)."""
        return self.nodes.rank if self.nodes else 0


def default_threads(workers: int, cores: int | None = None) -> int:
    """torch threads per worker: ``max(1, (cores - 1) // workers)``.

    One core is left to the supervisor (evaluations) and the server: measured on 2 cores, a single
    worker with 2 OpenMP threads next to the supervisor ran 6-10x slower on ``mlp`` than with 1
    (threads spin-waiting for a preempted peer), so ``cores // workers`` is not the default.
    """
    cores = cores or os.cpu_count() or 1
    return max(1, (cores - 1) // workers)


def _replica_plan(c: Config, variant: str) -> ReplicaMethod:
    """The replica method's validated settings (strategies.replicas: its own rules between options)."""
    return REPLICA_METHODS[variant].from_options(c, c.workers, nnodes_of(c))


def _supervisor_plan(c: Config) -> SupervisorPlan:
    """The supervisor's options; here only what needs the file system is left to check."""
    checks.output_path("checkpoint", c.checkpoint)
    if c.resume is not None and not (os.path.isfile(c.resume) or os.path.isfile(node_path(c.resume, 0))):
        raise checks.invalid("resume", c.resume, "no such checkpoint file (nor node files of one)")
    checks.output_path("log", c.log)
    return SupervisorPlan(c.time_limit, c.target_loss, c.eval_interval, c.eval_samples,
                          c.heartbeat_timeout, c.startup_timeout, c.start_method,
                          c.on_worker_failure == "restart", c.max_restarts, c.checkpoint,
                          c.checkpoint_every, c.resume, c.log, c.target_accuracy, c.keep)


def _worker_plan(c: Config, problem: Problem) -> WorkerPlan:
    n = problem.num_train
    batch = checks.integer("batch-size", problem.batch_size if c.batch_size is None else c.batch_size, 1)
    learners = c.workers * nnodes_of(c)
    if n is None:                         # a stream: read in order, B items a batch
        if c.sampling != "replace":
            raise checks.invalid("sampling", c.sampling, "a stream is read in order; --sampling applies "
                                 "to tensors and map-style datasets")
        n = 0
    elif batch > n:
        raise checks.invalid("batch-size", batch, f"larger than the training data ({n} rows)")
    else:
        check_sampling(c.sampling, n, batch, learners)
    delay = parse_delay(c.delay)
    return WorkerPlan(c.seed, c.threads or default_threads(c.workers), bool(c.pin), batch,
                      bool(c.check_finite), c.on_nonfinite == "stop", delay, parse_slow(c.slow, c.workers),
                      resolve_device(c.device, nnodes_of(c)), gpus=resolve_gpus(c, c.device),
                      sampling=c.sampling, learners=learners, rows=n)


def resolve(config: Config, problem: Problem) -> Plan:
    """Validate ``config`` against ``problem``; raise ConfigError naming the first bad option."""
    c = config
    c.validate()                          # again: a Config's fields may have been set after it was built
    spec = get_algorithm(c.algo)
    config_rules.check(c, spec, nnodes_of(c))
    worker = _worker_plan(c, problem)
    rule_name, protocol = c.rule or spec.rule, config_rules.protocol_of(c, spec)
    variant = config_rules.variant_of(c, spec)
    lr = c.lr if c.lr is not None else problem.lr.get(rule_name)
    rule = RULES[rule_name].from_options({**c.to_dict(), "betas": tuple(c.betas), "lr": lr})

    policy = make_lr_policy(c.lr_policy, c.lr_c, c.lr_max)
    sub: dict = {}
    k = 1
    if protocol == "replicas":
        sub["replicas"] = _replica_plan(c, spec.variant)
    if protocol == "server":
        # across nodes (but sync, an all-reduce) K counts the worker gradients of every node
        central = nnodes_of(c) > 1 and family(c.algo, protocol, variant) == "server"
        learners = c.workers * nnodes_of(c) if central else c.workers
        k_opt, adaptive = parse_k(c.k), None
        if k_opt == ADAPTIVE:
            patience = DEFAULT_PATIENCE if c.k_patience is None else c.k_patience
            adaptive = KSchedule(k_ladder(variant, learners, worker.delay), patience)
            k = adaptive.start
        else:
            k = k_opt if k_opt is not None else default_k(spec, learners)
        if central and k > learners:
            raise ConfigError(f"invalid k={k}: must be 1 <= k <= {learners} (--workers {c.workers} on "
                              f"each of {nnodes_of(c)} nodes: K counts the worker gradients of all nodes)")
        KAggregator(variant, learners, k, c.max_staleness)   # validates k against the learners
        sub["server"] = ServerPlan(variant, k, c.max_staleness, policy.needs_distance, learners, central,
                                   adaptive)
    if protocol == "direct":
        sub["direct"] = DirectPlan(c.read == "snapshot", c.max_staleness)
    steps = c.steps
    if steps is None and c.time_limit is None and c.target_loss is None and c.target_accuracy is None:
        steps = DEFAULT_STEPS
    nodes = resolve_nodes(c, family(c.algo, protocol, variant), steps, sub.get("replicas"))
    if nodes is not None:                 # per-node files; each node runs its share of the steps
        c = replace(c, checkpoint=node_path(c.checkpoint, nodes.rank),
                    log=node_path(c.log, nodes.rank))     # resume: engine.reshard_nodes finds the files
        worker = replace(worker, rank_offset=nodes.rank * c.workers)
        if steps is not None and protocol != "server":
            steps = split_steps(steps, nodes.nnodes, nodes.rank)
        sub["nodes"] = nodes
    supervisor = _supervisor_plan(c)
    schedule = parse_schedule(c.lr_schedule, c.lr_warmup, steps)
    return Plan(c.algo, rule, protocol, variant, k, c.workers, rule.lr, steps, policy, worker,
                supervisor, c.to_dict(), schedule=schedule, **sub)
