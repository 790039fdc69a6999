"""Run configuration: every option, validated eagerly (before any process or segment exists).

:class:`Config` is what users set (CLI flags and ``train()`` keywords map 1:1 onto it);
:func:`resolve` checks it against the problem and returns a :class:`Plan` with every default
filled in (rule object, protocol, K, learning rate...). The plan is what the engine runs.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields

from .errors import ConfigError
from .problems import Problem
from .rules import Rule, make_rule
from .strategies import LrPolicy, get_algorithm, make_lr_policy
from .strategies.algorithms import default_k
from .strategies.delays import Delay, parse_delay, parse_slow
from .strategies.server import KAggregator

READ_MODES = ("snapshot", "inplace")
START_METHODS = ("forkserver", "spawn")
DEFAULT_STEPS = 5000


@dataclass
class Config:
    algo: str = "apam"
    workers: int = 2
    steps: int | None = None            # max updates; DEFAULT_STEPS when no stop criterion is given
    time_limit: float | None = None     # seconds of training (start-up excluded)
    target_loss: float | None = None    # stop when an evaluation reaches it
    lr: float | None = None             # None: the problem's suggestion for the rule, else the rule's
    batch_size: int | None = None       # None: the problem's
    rule: str | None = None             # None: the algorithm's default
    protocol: str | None = None         # None: the algorithm's default
    k: int | None = None                # server protocols: K of K-of-P (None: the algorithm's)
    max_staleness: int | None = None    # drop gradients staler than this (None: no bound)
    momentum: float = 0.0               # sgd
    betas: tuple[float, float] = (0.9, 0.999)   # amsgrad / adam
    eps: float = 1e-8
    weight_decay: float = 0.0
    bias_correction: bool = True        # False: the paper-exact APAM rule
    lr_policy: str = "constant"
    lr_c: float | None = None
    lr_max: float | None = None
    delay: str = "none"                 # injected per-mini-batch delay (strategies.delays)
    slow: tuple[str, ...] = ()          # "RANK:FACTOR": that worker's delays times FACTOR
    read: str = "snapshot"              # how a worker reads the shared parameters
    # replica protocols (lsgd, easgd)
    tau: int = 10                       # pull period in local steps
    lam: float = 0.1                    # lsgd: pull strength toward the (local) leader, in [0, 1]
    groups: int = 1                     # lsgd: number of groups (multi-leader)
    lam_global: float = 0.1             # lsgd with groups > 1: pull strength toward the global leader
    tau_global: int = 50                # lsgd with groups > 1: global pull period
    window: int = 10                    # lsgd: losses averaged for leader selection
    trigger: str = "worker"             # lsgd: "worker" step count or "total" steps over all workers
    beta: float = 0.9                   # easgd: alpha = beta / workers
    replica_init: str = "same"          # "same" start for all replicas, or "independent" (seed + rank)
    seed: int = 0
    threads: int | None = None          # torch threads per worker (None: see default_threads)
    pin: bool = False                   # pin worker i to core i mod cores (psutil)
    eval_interval: float = 0.5          # seconds between evaluations of the shared parameters
    eval_samples: int = 8192            # evaluate on at most this many eval rows
    log: str | None = None              # JSONL file of samples
    start_method: str = "forkserver"
    heartbeat_timeout: float = 120.0    # a worker silent this long is reported as hung
    startup_timeout: float = 120.0
    check_finite: bool = True           # never apply NaN/Inf gradients (see on_nonfinite)
    on_nonfinite: str = "skip"          # "skip" (count them) or "stop" (the run fails)
    on_worker_failure: str = "stop"     # "stop" everything, or "restart" the failed rank
    max_restarts: int = 3               # restarts allowed per rank with on_worker_failure="restart"
    checkpoint: str | None = None       # write the whole shared state here (atomically)
    checkpoint_every: int | None = None # ... every N updates (and always when the run ends)
    resume: str | None = None           # continue from this checkpoint

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["slow"] = list(self.slow)
        return d

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass(frozen=True)
class Plan:
    """A validated configuration with every default resolved."""

    config: Config
    algo: str
    rule: Rule
    protocol: str
    variant: str
    k: int
    lr: float
    batch_size: int
    steps: int | None
    threads: int
    lr_policy: LrPolicy
    asynchronous: bool = True
    delay: Delay = field(default_factory=lambda: parse_delay("none"))
    slow: dict[int, float] = field(default_factory=dict)

    @property
    def workers(self) -> int:
        return self.config.workers


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


def _check_replicas(c: Config, variant: str) -> None:
    from .engine.control import LOSS_WINDOW
    from .strategies.leader import TRIGGERS, groups
    _check_int("tau", c.tau, 1)
    _check_int("tau-global", c.tau_global, 1)
    for name, v in (("lam", c.lam), ("lam-global", c.lam_global)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ConfigError(f"invalid {name}={v!r}: must be in [0, 1]")
    _check_int("groups", c.groups, 1)
    groups(c.workers, c.groups)
    _check_int("window", c.window, 1)
    if c.window > LOSS_WINDOW:
        raise ConfigError(f"invalid window={c.window}: at most {LOSS_WINDOW} losses are kept")
    _choice("trigger", c.trigger, TRIGGERS)
    if isinstance(c.beta, bool) or not isinstance(c.beta, (int, float)) or not 0.0 < c.beta <= c.workers:
        raise ConfigError(f"invalid beta={c.beta!r}: must be in (0, workers] "
                          f"(alpha = beta / workers <= 1)")
    _choice("replica-init", c.replica_init, ("same", "independent"))
    if c.max_staleness is not None:
        raise ConfigError(f"--max-staleness does not apply to {variant}: replicas take no stale gradients")


def _check_int(name: str, value, lo: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"invalid {name}={value!r}: must be an integer >= {lo}{hint}")


def _check_pos(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"invalid {name}={value!r}: must be a finite number "
                          f"{'>= 0' if allow_zero else '> 0'}")


def resolve(config: Config, problem: Problem) -> Plan:
    """Validate ``config`` against ``problem``; raise ConfigError naming the first bad option."""
    c = config
    spec = get_algorithm(c.algo)
    _check_int("workers", c.workers, 1)
    if c.workers > 256:
        raise ConfigError(f"invalid workers={c.workers}: at most 256 are supported")
    if c.steps is not None:
        _check_int("steps", c.steps, 1)
    if c.time_limit is not None:
        _check_pos("time-limit", c.time_limit)
    if c.target_loss is not None and (not isinstance(c.target_loss, (int, float))
                                      or not math.isfinite(c.target_loss)):
        raise ConfigError(f"invalid target-loss={c.target_loss!r}: must be a finite number")
    if c.lr is not None:
        _check_pos("lr", c.lr)
    n = len(problem.train[0])
    batch = problem.batch_size if c.batch_size is None else c.batch_size
    _check_int("batch-size", batch, 1)
    if batch > n:
        raise ConfigError(f"invalid batch-size={batch}: larger than the training data ({n} rows)")
    if c.max_staleness is not None:
        _check_int("max-staleness", c.max_staleness, 0)
    _check_int("seed", c.seed, 0)
    if c.threads is not None:
        _check_int("threads", c.threads, 1)
    _check_pos("eval-interval", c.eval_interval)
    _check_int("eval-samples", c.eval_samples, 1)
    _check_pos("heartbeat-timeout", c.heartbeat_timeout)
    _check_pos("startup-timeout", c.startup_timeout)
    _choice("on-nonfinite", c.on_nonfinite, ("skip", "stop"))
    _choice("on-worker-failure", c.on_worker_failure, ("stop", "restart"))
    _check_int("max-restarts", c.max_restarts, 0)
    if c.checkpoint_every is not None:
        _check_int("checkpoint-every", c.checkpoint_every, 1)
        if not c.checkpoint:
            raise ConfigError("--checkpoint-every needs --checkpoint FILE")
    if c.checkpoint:
        folder = os.path.dirname(os.path.abspath(c.checkpoint))
        if os.path.isdir(c.checkpoint) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ConfigError(f"invalid checkpoint={c.checkpoint!r}: must be a file path in an "
                              f"existing, writable directory")
    if c.resume is not None and not os.path.isfile(c.resume):
        raise ConfigError(f"invalid resume={c.resume!r}: no such checkpoint file")
    if c.log:
        folder = os.path.dirname(os.path.abspath(c.log))
        if os.path.isdir(c.log) or not os.path.isdir(folder):
            raise ConfigError(f"invalid log={c.log!r}: must be a file path in an existing directory")
    _choice("read", c.read, READ_MODES)
    _choice("start-method", c.start_method, START_METHODS)

    rule_name = c.rule or spec.rule
    if rule_name not in spec.rules:
        raise ConfigError(f"invalid rule={rule_name!r} for {c.algo}: choose one of {', '.join(spec.rules)}")
    protocol = c.protocol or spec.protocol
    if protocol not in spec.protocols:
        raise ConfigError(f"invalid protocol={protocol!r} for {c.algo}: choose one of "
                          f"{', '.join(spec.protocols)}")
    lr = c.lr if c.lr is not None else problem.lr.get(rule_name)
    hyper: dict = {} if lr is None else {"lr": lr}
    if rule_name == "sgd":
        if c.momentum:
            hyper["momentum"] = c.momentum
        if c.weight_decay:
            hyper["weight_decay"] = c.weight_decay
    else:
        hyper.update(betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay,
                     bias_correction=c.bias_correction)
        if c.momentum:
            raise ConfigError(f"invalid momentum={c.momentum}: momentum belongs to rule sgd, not {rule_name}")
    rule = make_rule(rule_name, **hyper)

    if protocol == "replicas":
        _check_replicas(c, spec.variant)
    if protocol in ("direct", "replicas"):
        variant, k = ("direct" if protocol == "direct" else spec.variant), 1
        if c.k is not None:
            raise ConfigError("--k applies to server protocols only (use --protocol server)")
    else:
        variant = spec.variant
        k = c.k if c.k is not None else default_k(spec, c.workers)
        _check_int("k", k, 1)
        KAggregator(variant, c.workers, k, c.max_staleness)   # validates k against workers
    policy = make_lr_policy(c.lr_policy, c.lr_c, c.lr_max)
    if policy.name != "constant" and protocol == "replicas":
        raise ConfigError(f"the {policy.name} lr policy is for stale gradients; {c.algo} replicas "
                          f"take none (use --lr-policy constant)")
    if policy.name != "constant" and not spec.asynchronous:
        raise ConfigError(f"the {policy.name} lr policy is for asynchronous algorithms, not {c.algo}")
    if policy.needs_distance and c.read == "inplace" and protocol == "direct":
        raise ConfigError("the dutta lr policy needs the parameters a gradient was read at: "
                          "use --read snapshot")
    steps = c.steps
    if steps is None and c.time_limit is None and c.target_loss is None:
        steps = DEFAULT_STEPS
    threads = c.threads or default_threads(c.workers)
    delay = parse_delay(c.delay)
    slow = parse_slow(c.slow, c.workers)
    return Plan(c, c.algo, rule, protocol, variant, k, rule.lr, batch, steps, threads, policy,
                spec.asynchronous, delay, slow)
