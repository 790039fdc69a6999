"""Run configuration: every option a user sets, with its default, its help and its check.

:class:`Config` is what users set: ``train()`` keywords and the CLI's flags both come from its
fields (the CLI builds its options from each field's metadata, so a default is written once).
Each field declares its own check (``opt(..., check=...)``, a function ``check(name, value)``
built on :mod:`shmopt.checks`); ``Config.__post_init__`` runs them, so ``Config(...)``,
``shmopt.train(...)``, the CLI and a checkpoint's stored configuration (:meth:`Config.from_dict`)
refuse a bad value with the same line (``invalid time-limit=0: must be > 0``) when the Config is
built. A field whose default is None also accepts None (the default is resolved later). Rules
between fields live in :mod:`shmopt.config_rules`; :func:`shmopt.plan.resolve` runs them, checks
what needs the problem or the machine, and returns the :class:`~shmopt.plan.Plan` the engine runs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any

from . import checks, devices
from .errors import ConfigError
from .node_plan import NODE_FAILURE, parse_master
from .rules import RULES, TABLE_RULES
from .strategies.adaptive_k import parse_k
from .strategies.algorithms import get_algorithm
from .strategies.delays import parse_delay, parse_slow
from .strategies.leader import TRIGGERS
from .strategies.lr import LR_POLICIES
from .strategies.sampling import SAMPLING
from .strategies.schedules import parse_schedule

#: Option scopes: "train" options are shared by ``shmopt run`` and ``shmopt compare``; "run"
#: options belong to ``run`` alone (compare sets them per algorithm or not at all).
TRAIN, RUN = "train", "run"


PROTOCOLS = ("direct", "server", "replicas")
READ_MODES = ("snapshot", "inplace")
START_METHODS = ("forkserver", "spawn")
MAX_WORKERS = 256


# ------------------------------------------------------------------ field checks
# Each is ``check(name, value)``; ``name`` is the option as the CLI spells it (``time-limit``).
def _int(lo: int, hi: int | None = None) -> checks.Check:
    return partial(checks.integer, lo=lo, hi=hi)


def _real(**bounds: float) -> checks.Check:
    return partial(checks.number, **bounds)


def _one_of(*accepted: str) -> checks.Check:
    return partial(checks.choice, accepted=accepted)


def _workers(name: str, value: object) -> int:
    n = checks.integer(name, value, 1)
    if n > MAX_WORKERS:
        raise checks.invalid(name, value, f"at most {MAX_WORKERS} are supported")
    return n


def _algo(name: str, value: object) -> str:
    return get_algorithm(value).name    # type: ignore[arg-type]


def _k(name: str, value: object) -> object:
    return parse_k(value)               # type: ignore[arg-type]


def _delay(name: str, value: object) -> object:
    delay = parse_delay(value)          # type: ignore[arg-type]
    if delay.kind == "pareto" and not delay.alpha > 1:   # type: ignore[operator]
        raise ConfigError(f"invalid delay {value!r}: a run needs ALPHA > 1 (ALPHA <= 1 has an "
                          f"infinite mean delay, the run would sleep without end)")
    return delay


def _schedule(name: str, value: object) -> object:
    return parse_schedule(value, check_budget=False)   # type: ignore[arg-type]  (plan.resolve: the budget)


def _slow(name: str, value: object) -> object:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise checks.invalid(name, value, "must be a list of RANK:FACTOR strings")
    return parse_slow(value, None)      # the ranks against --workers: config_rules


def _master(name: str, value: object) -> object:
    return parse_master(checks.text(name, value))


def _device(name: str, value: object) -> str:
    """The form of ``--device`` (which devices exist is checked where the run starts)."""
    t = value.strip().lower() if isinstance(value, str) else ""
    kind, _, index = t.partition(":")
    if t not in ("cpu", "auto") and (kind not in devices.accelerators() or (index and not index.isdigit())):
        raise checks.invalid(name, value, f"choose {devices.choices()}")
    return value                        # type: ignore[return-value]


def opt(default: Any, help: str, *, type: Any = None, scope: str = TRAIN, flag: str | None = None,
        short: str | None = None, metavar: str | None = None, check: checks.Check | None = None) -> Any:
    """A Config field with the metadata the CLI builds its option from, and its check."""
    meta = {"help": help, "type": type, "scope": scope, "flag": flag, "short": short, "metavar": metavar,
            "check": check}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    algo: str = opt("apam", "Algorithm (see `shmopt algos`).", scope=RUN, check=_algo)
    workers: int = opt(2, "Worker processes.", type=int, short="-w", check=_workers)
    steps: int | None = opt(None, "Stop after this many updates [default: 5000 if no other stop "
                            "criterion is given].", type=int, check=_int(1))
    time_limit: float | None = opt(None, "Stop after this many seconds of training.", type=float,
                                   check=_real(gt=0))
    target_loss: float | None = opt(None, "Stop when the eval loss reaches this value.", type=float,
                                    check=_real())
    target_accuracy: float | None = opt(None, "Stop when the eval accuracy reaches this value (0-1; "
                                        "problems that report accuracy).", type=float,
                                        check=_real(gt=0, le=1))
    lr: float | None = opt(None, "Learning rate [default: the problem's suggestion].", type=float,
                           check=_real(gt=0))
    batch_size: int | None = opt(None, "Mini-batch size per worker [default: the problem's].", type=int,
                                 check=_int(1))
    rule: str | None = opt(None, "Update rule: sgd, adam or amsgrad [default: the algorithm's].",
                           check=_one_of(*RULES))
    table_rule: str = opt("auto", "Row rule of the tables (parameters with sparse gradients): sgd, "
                          "adagrad, rowwise-adagrad, adam, amsgrad (lazy: touched rows only) or "
                          "rowwise-amsgrad [default auto: the --rule's lazy form].",
                          check=_one_of("auto", *TABLE_RULES))
    table_lr: float | None = opt(None, "Learning rate of the tables [default: --lr].", type=float,
                                 check=_real(gt=0))
    protocol: str | None = opt(None, "direct (lock-free, each worker applies) or server (one applier) "
                               "[default: the algorithm's].", check=_one_of(*PROTOCOLS))
    k: int | str | None = opt(None, "Server protocols: gradients averaged per update, or adaptive "
                              "(k-sync, k-async: K rises from 1 when the eval loss stops improving) "
                              "[default: the algorithm's].", scope=RUN, metavar="K|adaptive", check=_k)
    k_patience: int | None = opt(None, "--k adaptive: evaluations without a 0.1% improvement of the "
                                 "eval loss before K rises [default: 3].", type=int, scope=RUN, check=_int(1))
    max_staleness: int | None = opt(None, "Drop gradients staler than this (APAM's bound).", type=int,
                                    check=_int(0))
    momentum: float = opt(0.0, "SGD momentum.", type=float, check=_real(ge=0))
    betas: tuple[float, float] = opt((0.9, 0.999), "amsgrad/adam: beta1 and beta2.", type=float,
                                     flag="--beta1/--beta2", check=partial(checks.pair, ge=0, lt=1))
    eps: float = opt(1e-8, "amsgrad/adam: epsilon.", type=float, check=_real(ge=0))
    weight_decay: float = opt(0.0, "L2 weight decay.", type=float, check=_real(ge=0))
    bias_correction: bool = opt(True, "amsgrad/adam bias correction; --no-bias-correction is the "
                                "paper-exact APAM rule.", check=checks.flag)
    lr_policy: str = opt("constant", "constant, staleness (lr/tau) or dutta (min(C/|w-w_read|^2, "
                         "lr-max)).", check=_one_of(*LR_POLICIES))
    lr_c: float | None = opt(None, "dutta policy: C.", type=float, check=_real(gt=0))
    lr_max: float | None = opt(None, "dutta policy: eta_max [default: --lr].", type=float, check=_real(gt=0))
    lr_schedule: str = opt("constant", "Base rate against the global update count: constant, inv-sqrt[:S] "
                           "(min(lr*sqrt(S/k), lr), APAM's), cosine[:FLOOR], linear[:FLOOR], exp:G, "
                           "step:N[:G]; decays span --steps.", metavar="NAME[:ARGS]", check=_schedule)
    lr_warmup: int = opt(0, "Updates of linear warm-up (lr*(k+1)/W) before the schedule.", type=int,
                         check=_int(0))
    delay: str = opt("none", "Injected per-mini-batch delay: none, exp:MEAN, shifted-exp:SHIFT:MEAN, "
                     "pareto:SCALE:ALPHA (seconds, ALPHA > 1).", check=_delay)
    slow: tuple[str, ...] = opt((), "Make a worker slower: its delays times FACTOR (repeatable).",
                                metavar="RANK:FACTOR", check=_slow)
    sampling: str = opt("replace", "Mini-batch rows: replace (uniform, with replacement), shuffle (each "
                        "worker walks its own permutation, epoch by epoch) or shard (disjoint shards "
                        "per worker).", check=_one_of(*SAMPLING))
    read: str = opt("snapshot", "snapshot (private copy per gradient) or inplace (read shared memory).",
                    check=_one_of(*READ_MODES))
    tau: int = opt(10, "Replica methods (lsgd, easgd, local-sgd): local steps between couplings (H of "
                   "local SGD).", type=int, check=_int(1))
    lam: float = opt(0.1, "lsgd: pull strength toward the (group) leader, in [0, 1].", type=float,
                     check=_real(ge=0, le=1))
    groups: int = opt(1, "lsgd: groups of workers, each with a local leader (multi-leader).", type=int,
                      check=_int(1))
    lam_global: float = opt(0.1, "lsgd with --groups > 1 or across nodes: pull strength toward the "
                            "global leader.", type=float, check=_real(ge=0, le=1))
    tau_global: int = opt(50, "lsgd with --groups > 1: local steps between global pulls; replica "
                          "methods across nodes: each worker's steps between exchanges.", type=int,
                          check=_int(1))
    window: int = opt(10, "lsgd: recent losses averaged to choose the leader.", type=int, check=_int(1))
    trigger: str = opt("worker", "Replica methods: couple on each worker's own step count (worker) or "
                       "on the total steps over all workers (total, lsgd's reference).",
                       check=_one_of(*TRIGGERS))
    beta: float = opt(0.9, "easgd: moving rate, alpha = beta / workers.", type=float, check=_real(gt=0))
    replica_init: str = opt("same", "Replica methods: same start for every replica, or "
                            "independent (seed + rank).", check=_one_of("same", "independent"))
    seed: int = opt(0, "Seed; worker r uses seed + r.", type=int, check=_int(0))
    threads: int | None = opt(None, "torch threads per worker [default: (cores-1) // workers].", type=int,
                              check=_int(1))
    pin: bool = opt(False, "Pin worker i to core i mod cores (psutil).", check=checks.flag)
    eval_interval: float = opt(0.5, "Seconds between evaluations.", type=float, check=_real(gt=0))
    eval_samples: int = opt(8192, "Evaluate on at most this many eval rows.", type=int, check=_int(1))
    log: str | None = opt(None, "Write the evaluation samples as JSON lines to this file.", scope=RUN,
                          check=checks.text)
    start_method: str = opt("forkserver", "forkserver or spawn.", check=_one_of(*START_METHODS))
    heartbeat_timeout: float = opt(120.0, "Seconds of silence after which a worker counts as hung.",
                                   type=float, check=_real(gt=0))
    startup_timeout: float = opt(120.0, "Seconds the workers may take to start.", type=float,
                                 check=_real(gt=0))
    check_finite: bool = opt(True, "Never apply a NaN/Inf loss or gradient (see --on-nonfinite).",
                             check=checks.flag)
    on_nonfinite: str = opt("skip", "A NaN/Inf loss or gradient is never applied: skip (count it) or "
                            "stop.", check=_one_of("skip", "stop"))
    on_worker_failure: str = opt("stop", "stop (everything, exit 1) or restart (respawn the rank; "
                                 "asynchronous algorithms continue from the shared state).",
                                 check=_one_of("stop", "restart"))
    max_restarts: int = opt(3, "Restarts allowed per rank with --on-worker-failure restart.", type=int,
                            check=_int(0))
    checkpoint: str | None = opt(None, "Write the whole shared state to this file (atomically) when the "
                                 "run ends, also on Ctrl-C/SIGTERM, and every --checkpoint-every "
                                 "updates.", scope=RUN, check=checks.text)
    checkpoint_every: int | None = opt(None, "Updates between checkpoints.", type=int, scope=RUN,
                                       check=_int(1))
    keep: int = opt(1, "Checkpoints kept: the newest at --checkpoint, older ones at PATH.1 ... PATH.N-1, "
                    "each with a PATH.json sidecar.", type=int, scope=RUN, check=_int(1))
    resume: str | None = opt(None, "Continue from this checkpoint (same problem, algorithm, workers).",
                             scope=RUN, check=checks.text)
    nnodes: int | None = opt(None, "Nodes (machines) in the job, one shmopt run per node [default: "
                             "torchrun's WORLD_SIZE, else 1].", type=int, scope=RUN, check=_int(1))
    node_rank: int | None = opt(None, "This node's rank, 0..nnodes-1 [default: torchrun's RANK].",
                                type=int, scope=RUN, check=_int(0))
    master: str | None = opt(None, "HOST:PORT where node 0 listens for the others (without torchrun); "
                             "node 0 binds this address only.", scope=RUN, metavar="HOST:PORT", check=_master)
    dist_timeout: float = opt(60.0, "Across nodes: seconds to wait for another node before it counts "
                              "as lost.", type=float, scope=RUN, check=_real(gt=0))
    exchange_every: int = opt(10, "apam/hogwild across nodes: node updates between model averagings "
                              "(H).", type=int, scope=RUN, check=_int(1))
    outer_lr: float = opt(1.0, "apam/hogwild across nodes: outer learning rate on the averaged delta "
                          "(DiLoCo; 1 with no momentum = plain averaging).", type=float, scope=RUN,
                          check=_real(gt=0))
    outer_momentum: float = opt(0.0, "apam/hogwild across nodes: outer Nesterov momentum (DiLoCo uses "
                                "0.9 with --outer-lr 0.7).", type=float, scope=RUN, check=_real(ge=0, lt=1))
    sync_state: bool = opt(False, "apam/hogwild across nodes: average the rule state (AMSGrad "
                           "moments) too, not only the parameters.", scope=RUN, check=checks.flag)
    device: str = opt("cpu", "Where the shared parameters and state live: cpu, cuda, cuda:N, or auto "
                      "(cuda when a device is visible). The control block stays in host memory.",
                      check=_device)
    gpus: int = opt(1, "With --device cuda: spread the workers over this many visible GPUs (the "
                    "arena's first; direct and server protocols). Each computes on its own GPU from a "
                    "copy and updates the arena on the arena's GPU.", type=int, check=_int(1))
    on_node_failure: str = opt("stop", "Server protocols across nodes (K-variants, apam/hogwild "
                               "--protocol server): stop (every node, naming the lost one) or "
                               "continue without the lost node, while the rest can still make K.",
                               scope=RUN, check=_one_of(*NODE_FAILURE))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Run every field's check (ConfigError naming the first refused option)."""
        for f in fields(self):
            value, check = getattr(self, f.name), f.metadata.get("check")
            if check is not None and not (value is None and f.default is None):
                check(option_name(f.name), value)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "Config":
        """The Config of a plain dict (``train()`` keywords, a checkpoint's stored ``to_dict()``):
        an unknown key is refused, then every field is checked as by ``Config(...)``."""
        names = cls.field_names()
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r}: accepted are {', '.join(sorted(names))}")
        values = dict(options)
        for key in ("betas", "slow"):            # to_dict() writes the tuples as lists
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["slow"] = list(self.slow)
        return d

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


def option_name(field_name: str) -> str:
    """A field's name as its messages spell it: the CLI's (``time_limit`` -> ``time-limit``)."""
    return field_name.replace("_", "-")
