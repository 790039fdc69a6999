"""From a :class:`~shmopt.config.Config` to the :class:`Plan` the engine runs.

:func:`resolve` validates every option eagerly (before any process or segment exists; each bad
option is one ConfigError naming it and what is accepted) and resolves every default and every
derived number here, so the engine reads finished values only: per-protocol sub-plans
(:class:`DirectPlan`, :class:`ServerPlan`, the replica method of strategies.replicas), what each learner needs
(:class:`WorkerPlan`) and what the supervisor needs (:class:`SupervisorPlan`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from .config import Config
from .errors import ConfigError
from .devices import resolve_device, resolve_gpus
from .node_plan import NodePlan, node_path, nnodes_of, resolve_nodes, split_steps
from .problems import Problem
from .rules import RULES, Rule
from .strategies import LrPolicy, get_algorithm, make_lr_policy
from .strategies.adaptive_k import ADAPTIVE, DEFAULT_PATIENCE, KSchedule, check_adaptive, k_ladder, parse_k
from .strategies.algorithms import default_k, family
from .strategies.replicas import REPLICA_METHODS, ReplicaMethod
from .strategies.delays import Delay, parse_delay, parse_slow
from .strategies.sampling import check_sampling
from .strategies.server import KAggregator

READ_MODES = ("snapshot", "inplace")
START_METHODS = ("forkserver", "spawn")
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

    @property
    def batch_size(self) -> int:
        return self.worker.batch_size

    @property
    def train_rows(self) -> int:
        return self.worker.rows

    def group_of(self, rank: int) -> int:
        """lsgd: the group of a learner (multi-leader); 0 for every other rank and algorithm."""
        groups = self.replicas.group if self.replicas is not None else ()
        return groups[rank] if rank < len(groups) else 0

    @property
    def processes(self) -> int:
        """Engine processes: the learners, plus the applier of server protocols, or across nodes
        the node link of the other protocols (rank ``workers`` in both cases)."""
        return self.workers + (1 if self.server is not None or self.nodes is not None else 0)


def default_threads(workers: int, cores: int | None = None) -> int:
    """torch threads per worker: ``max(1, (cores - 1) // workers)``.

    One core is left to the supervisor (evaluations) and the server: measured on 2 cores, a single
    worker with 2 OpenMP threads next to the supervisor ran 6-10x slower on ``mlp`` than with 1
    (threads spin-waiting for a preempted peer), so ``cores // workers`` is not the default.
    """
    cores = cores or os.cpu_count() or 1
    return max(1, (cores - 1) // workers)


def _choice(name: str, value, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(f"invalid {name}={value!r}: choose one of {', '.join(accepted)}")


def _check_int(name: str, value, lo: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"invalid {name}={value!r}: must be an integer >= {lo}{hint}")


def _check_pos(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"invalid {name}={value!r}: must be a finite number "
                          f"{'>= 0' if allow_zero else '> 0'}")


def check_output_path(name: str, path: str | None) -> None:
    """An output file must be creatable before any work starts (no trained model lost at the end)."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"invalid {name}={path!r}: is a directory; give a file path")
    if not os.path.isdir(folder):
        raise ConfigError(f"invalid {name}={path!r}: directory {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ConfigError(f"invalid {name}={path!r}: not writable")


def _replica_plan(c: Config, variant: str) -> ReplicaMethod:
    """The replica method's validated settings (strategies.replicas)."""
    for name, v in (("tau", c.tau), ("tau-global", c.tau_global), ("groups", c.groups), ("window", c.window)):
        _check_int(name, v, 1)
    for name, v in (("lam", c.lam), ("lam-global", c.lam_global)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ConfigError(f"invalid {name}={v!r}: must be in [0, 1]")
    if isinstance(c.beta, bool) or not isinstance(c.beta, (int, float)):
        raise ConfigError(f"invalid beta={c.beta!r}: must be a number")
    _choice("replica-init", c.replica_init, ("same", "independent"))
    return REPLICA_METHODS[variant].from_options(c, c.workers, nnodes_of(c))


def _supervisor_plan(c: Config) -> SupervisorPlan:
    if c.time_limit is not None:
        _check_pos("time-limit", c.time_limit)
    if c.target_loss is not None and (isinstance(c.target_loss, bool) or not isinstance(
            c.target_loss, (int, float)) or not math.isfinite(c.target_loss)):
        raise ConfigError(f"invalid target-loss={c.target_loss!r}: must be a finite number")
    if c.target_accuracy is not None and (isinstance(c.target_accuracy, bool) or not isinstance(
            c.target_accuracy, (int, float)) or not 0 < c.target_accuracy <= 1):
        raise ConfigError(f"invalid target-accuracy={c.target_accuracy!r}: must be in (0, 1]")
    _check_pos("eval-interval", c.eval_interval)
    _check_int("eval-samples", c.eval_samples, 1)
    _check_pos("heartbeat-timeout", c.heartbeat_timeout)
    _check_pos("startup-timeout", c.startup_timeout)
    _choice("on-worker-failure", c.on_worker_failure, ("stop", "restart"))
    _check_int("max-restarts", c.max_restarts, 0)
    if c.checkpoint_every is not None:
        _check_int("checkpoint-every", c.checkpoint_every, 1)
        if not c.checkpoint:
            raise ConfigError("--checkpoint-every needs --checkpoint FILE")
    check_output_path("checkpoint", c.checkpoint)
    if c.resume is not None and not os.path.isfile(c.resume):
        raise ConfigError(f"invalid resume={c.resume!r}: no such checkpoint file")
    check_output_path("log", c.log)
    _choice("start-method", c.start_method, START_METHODS)
    return SupervisorPlan(c.time_limit, c.target_loss, c.eval_interval, c.eval_samples,
                          c.heartbeat_timeout, c.startup_timeout, c.start_method,
                          c.on_worker_failure == "restart", c.max_restarts, c.checkpoint,
                          c.checkpoint_every, c.resume, c.log, c.target_accuracy)


def _worker_plan(c: Config, problem: Problem) -> WorkerPlan:
    n = len(problem.train[0])
    batch = problem.batch_size if c.batch_size is None else c.batch_size
    _check_int("batch-size", batch, 1)
    if batch > n:
        raise ConfigError(f"invalid batch-size={batch}: larger than the training data ({n} rows)")
    _check_int("seed", c.seed, 0)
    if c.threads is not None:
        _check_int("threads", c.threads, 1)
    _choice("on-nonfinite", c.on_nonfinite, ("skip", "stop"))
    learners = c.workers * nnodes_of(c)
    check_sampling(c.sampling, n, batch, learners)
    delay = parse_delay(c.delay)
    if delay.kind == "pareto" and not delay.alpha > 1:   # type: ignore[operator]
        raise ConfigError(f"invalid delay {c.delay!r}: a run needs ALPHA > 1 (ALPHA <= 1 has an "
                          f"infinite mean delay, the run would sleep without end)")
    return WorkerPlan(c.seed, c.threads or default_threads(c.workers), bool(c.pin), batch,
                      bool(c.check_finite), c.on_nonfinite == "stop", delay, parse_slow(c.slow, c.workers),
                      resolve_device(c.device, nnodes_of(c)), gpus=resolve_gpus(c, c.device),
                      sampling=c.sampling, learners=learners, rows=n)


def resolve(config: Config, problem: Problem) -> Plan:
    """Validate ``config`` against ``problem``; raise ConfigError naming the first bad option."""
    c = config
    spec = get_algorithm(c.algo)
    _check_int("workers", c.workers, 1)
    if c.workers > 256:
        raise ConfigError(f"invalid workers={c.workers}: at most 256 are supported")
    if c.steps is not None:
        _check_int("steps", c.steps, 1)
    if c.lr is not None:
        _check_pos("lr", c.lr)
    if c.max_staleness is not None:
        _check_int("max-staleness", c.max_staleness, 0)
    worker = _worker_plan(c, problem)
    _choice("read", c.read, READ_MODES)

    rule_name = c.rule or spec.rule
    if rule_name not in spec.rules:
        raise ConfigError(f"invalid rule={rule_name!r} for {c.algo}: choose one of {', '.join(spec.rules)}")
    protocol = c.protocol or spec.protocol
    if protocol not in spec.protocols:
        raise ConfigError(f"invalid protocol={protocol!r} for {c.algo}: choose one of "
                          f"{', '.join(spec.protocols)}")
    lr = c.lr if c.lr is not None else problem.lr.get(rule_name)
    rule = RULES[rule_name].from_options({**c.to_dict(), "betas": tuple(c.betas), "lr": lr})

    policy = make_lr_policy(c.lr_policy, c.lr_c, c.lr_max)
    if policy.name != "constant" and protocol == "replicas":
        raise ConfigError(f"the {policy.name} lr policy is for stale gradients; {c.algo} replicas "
                          f"take none (use --lr-policy constant)")
    if policy.name != "constant" and not spec.asynchronous:
        raise ConfigError(f"the {policy.name} lr policy is for asynchronous algorithms, not {c.algo}")
    sub: dict = {}
    k = 1
    if protocol == "replicas":
        sub["replicas"] = _replica_plan(c, spec.variant)
    if protocol in ("direct", "replicas"):
        variant = "direct" if protocol == "direct" else spec.variant
        if c.k is not None or c.k_patience is not None:
            raise ConfigError("--k applies to server protocols only (use --protocol server)")
    else:
        variant = spec.variant
        # across nodes (but sync, an all-reduce) K counts the worker gradients of every node
        central = nnodes_of(c) > 1 and family(c.algo, protocol, variant) == "server"
        learners = c.workers * nnodes_of(c) if central else c.workers
        k_opt, adaptive = parse_k(c.k), None
        if k_opt == ADAPTIVE:
            check_adaptive(c.algo, variant, nnodes_of(c))
            patience = DEFAULT_PATIENCE if c.k_patience is None else c.k_patience
            adaptive = KSchedule(k_ladder(variant, learners, worker.delay), patience)
            k = adaptive.start
        elif c.k_patience is not None:
            raise ConfigError("--k-patience applies to --k adaptive only")
        else:
            k = k_opt if k_opt is not None else default_k(spec, learners)
        _check_int("k", k, 1)
        if central and k > learners:
            raise ConfigError(f"invalid k={k}: must be 1 <= k <= {learners} (--workers {c.workers} on "
                              f"each of {nnodes_of(c)} nodes: K counts the worker gradients of all nodes)")
        KAggregator(variant, learners, k, c.max_staleness)   # validates k against the learners
        sub["server"] = ServerPlan(variant, k, c.max_staleness, policy.needs_distance, learners, central,
                                   adaptive)
    if protocol == "direct":
        if policy.needs_distance and c.read == "inplace":
            raise ConfigError("the dutta lr policy needs the parameters a gradient was read at: "
                              "use --read snapshot")
        sub["direct"] = DirectPlan(c.read == "snapshot", c.max_staleness)
    steps = c.steps
    if steps is None and c.time_limit is None and c.target_loss is None and c.target_accuracy is None:
        steps = DEFAULT_STEPS
    nodes = resolve_nodes(c, family(c.algo, protocol, variant), steps, sub.get("replicas"))
    if nodes is not None:                 # per-node files; each node runs its share of the steps
        c = replace(c, checkpoint=node_path(c.checkpoint, nodes.rank),
                    resume=node_path(c.resume, nodes.rank), log=node_path(c.log, nodes.rank))
        worker = replace(worker, rank_offset=nodes.rank * c.workers)
        if steps is not None and protocol != "server":
            steps = split_steps(steps, nodes.nnodes, nodes.rank)
        sub["nodes"] = nodes
    supervisor = _supervisor_plan(c)
    return Plan(c.algo, rule, protocol, variant, k, c.workers, rule.lr, steps, policy, worker,
                supervisor, c.to_dict(), **sub)
