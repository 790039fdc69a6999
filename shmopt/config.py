"""Run configuration: every option a user sets, with its default and its help, in one place.

:class:`Config` is what users set: ``train()`` keywords and the CLI's flags both come from its
fields (the CLI builds its options from each field's metadata, so a default is written once).
:func:`shmopt.plan.resolve` validates it against a problem and returns the :class:`~shmopt.plan.Plan`
the engine runs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Option scopes: "train" options are shared by ``shmopt run`` and ``shmopt compare``; "run"
#: options belong to ``run`` alone (compare sets them per algorithm or not at all).
TRAIN, RUN = "train", "run"


def opt(default: Any, help: str, *, type: Any = None, scope: str = TRAIN, flag: str | None = None,
        short: str | None = None, metavar: str | None = None) -> Any:
    """A Config field with the metadata the CLI builds its option from."""
    meta = {"help": help, "type": type, "scope": scope, "flag": flag, "short": short, "metavar": metavar}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    algo: str = opt("apam", "Algorithm (see `shmopt algos`).", scope=RUN)
    workers: int = opt(2, "Worker processes.", type=int, short="-w")
    steps: int | None = opt(None, "Stop after this many updates [default: 5000 if no other stop "
                            "criterion is given].", type=int)
    time_limit: float | None = opt(None, "Stop after this many seconds of training.", type=float)
    target_loss: float | None = opt(None, "Stop when the eval loss reaches this value.", type=float)
    target_accuracy: float | None = opt(None, "Stop when the eval accuracy reaches this value (0-1; "
                                        "problems that report accuracy).", type=float)
    lr: float | None = opt(None, "Learning rate [default: the problem's suggestion].", type=float)
    batch_size: int | None = opt(None, "Mini-batch size per worker [default: the problem's].", type=int)
    rule: str | None = opt(None, "Update rule: sgd, adam or amsgrad [default: the algorithm's].")
    protocol: str | None = opt(None, "direct (lock-free, each worker applies) or server (one applier) "
                               "[default: the algorithm's].")
    k: int | str | None = opt(None, "Server protocols: gradients averaged per update, or adaptive "
                              "(k-sync, k-async: K rises from 1 when the eval loss stops improving) "
                              "[default: the algorithm's].", scope=RUN, metavar="K|adaptive")
    k_patience: int | None = opt(None, "--k adaptive: evaluations without a 0.1% improvement of the "
                                 "eval loss before K rises [default: 3].", type=int, scope=RUN)
    max_staleness: int | None = opt(None, "Drop gradients staler than this (APAM's bound).", type=int)
    momentum: float = opt(0.0, "SGD momentum.", type=float)
    betas: tuple[float, float] = opt((0.9, 0.999), "amsgrad/adam: beta1 and beta2.", type=float,
                                     flag="--beta1/--beta2")
    eps: float = opt(1e-8, "amsgrad/adam: epsilon.", type=float)
    weight_decay: float = opt(0.0, "L2 weight decay.", type=float)
    bias_correction: bool = opt(True, "amsgrad/adam bias correction; --no-bias-correction is the "
                                "paper-exact APAM rule.")
    lr_policy: str = opt("constant", "constant, staleness (lr/tau) or dutta (min(C/|w-w_read|^2, "
                         "lr-max)).")
    lr_c: float | None = opt(None, "dutta policy: C.", type=float)
    lr_max: float | None = opt(None, "dutta policy: eta_max [default: --lr].", type=float)
    delay: str = opt("none", "Injected per-mini-batch delay: none, exp:MEAN, shifted-exp:SHIFT:MEAN, "
                     "pareto:SCALE:ALPHA (seconds, ALPHA > 1).")
    slow: tuple[str, ...] = opt((), "Make a worker slower: its delays times FACTOR (repeatable).",
                                metavar="RANK:FACTOR")
    sampling: str = opt("replace", "Mini-batch rows: replace (uniform, with replacement), shuffle (each "
                        "worker walks its own permutation, epoch by epoch) or shard (disjoint shards "
                        "per worker).")
    read: str = opt("snapshot", "snapshot (private copy per gradient) or inplace (read shared memory).")
    tau: int = opt(10, "lsgd/easgd: local steps between pulls.", type=int)
    lam: float = opt(0.1, "lsgd: pull strength toward the (group) leader, in [0, 1].", type=float)
    groups: int = opt(1, "lsgd: groups of workers, each with a local leader (multi-leader).", type=int)
    lam_global: float = opt(0.1, "lsgd with --groups > 1 or across nodes: pull strength toward the "
                            "global leader.", type=float)
    tau_global: int = opt(50, "lsgd with --groups > 1: local steps between global pulls; lsgd/easgd "
                          "across nodes: each worker's steps between exchanges.", type=int)
    window: int = opt(10, "lsgd: recent losses averaged to choose the leader.", type=int)
    trigger: str = opt("worker", "lsgd/easgd: pull on each worker's own step count (worker) or on the "
                       "total steps over all workers (total, the reference's).")
    beta: float = opt(0.9, "easgd: moving rate, alpha = beta / workers.", type=float)
    replica_init: str = opt("same", "lsgd/easgd: same start for every replica, or independent "
                            "(seed + rank).")
    seed: int = opt(0, "Seed; worker r uses seed + r.", type=int)
    threads: int | None = opt(None, "torch threads per worker [default: (cores-1) // workers].", type=int)
    pin: bool = opt(False, "Pin worker i to core i mod cores (psutil).")
    eval_interval: float = opt(0.5, "Seconds between evaluations.", type=float)
    eval_samples: int = opt(8192, "Evaluate on at most this many eval rows.", type=int)
    log: str | None = opt(None, "Write the evaluation samples as JSON lines to this file.", scope=RUN)
    start_method: str = opt("forkserver", "forkserver or spawn.")
    heartbeat_timeout: float = opt(120.0, "Seconds of silence after which a worker counts as hung.",
                                   type=float)
    startup_timeout: float = opt(120.0, "Seconds the workers may take to start.", type=float)
    check_finite: bool = opt(True, "Never apply a NaN/Inf loss or gradient (see --on-nonfinite).")
    on_nonfinite: str = opt("skip", "A NaN/Inf loss or gradient is never applied: skip (count it) or "
                            "stop.")
    on_worker_failure: str = opt("stop", "stop (everything, exit 1) or restart (respawn the rank; "
                                 "asynchronous algorithms continue from the shared state).")
    max_restarts: int = opt(3, "Restarts allowed per rank with --on-worker-failure restart.", type=int)
    checkpoint: str | None = opt(None, "Write the whole shared state to this file (atomically) when the "
                                 "run ends, also on Ctrl-C/SIGTERM, and every --checkpoint-every "
                                 "updates.", scope=RUN)
    checkpoint_every: int | None = opt(None, "Updates between checkpoints.", type=int, scope=RUN)
    resume: str | None = opt(None, "Continue from this checkpoint (same problem, algorithm, workers).",
                             scope=RUN)
    nnodes: int | None = opt(None, "Nodes (machines) in the job, one shmopt run per node [default: "
                             "torchrun's WORLD_SIZE, else 1].", type=int, scope=RUN)
    node_rank: int | None = opt(None, "This node's rank, 0..nnodes-1 [default: torchrun's RANK].",
                                type=int, scope=RUN)
    master: str | None = opt(None, "HOST:PORT where node 0 listens for the others (without torchrun); "
                             "node 0 binds this address only.", scope=RUN, metavar="HOST:PORT")
    dist_timeout: float = opt(60.0, "Across nodes: seconds to wait for another node before it counts "
                              "as lost.", type=float, scope=RUN)
    exchange_every: int = opt(10, "apam/hogwild across nodes: node updates between model averagings "
                              "(H).", type=int, scope=RUN)
    outer_lr: float = opt(1.0, "apam/hogwild across nodes: outer learning rate on the averaged delta "
                          "(DiLoCo; 1 with no momentum = plain averaging).", type=float, scope=RUN)
    outer_momentum: float = opt(0.0, "apam/hogwild across nodes: outer Nesterov momentum (DiLoCo uses "
                                "0.9 with --outer-lr 0.7).", type=float, scope=RUN)
    sync_state: bool = opt(False, "apam/hogwild across nodes: average the rule state (AMSGrad "
                           "moments) too, not only the parameters.", scope=RUN)
    device: str = opt("cpu", "Where the shared parameters and state live: cpu, cuda, cuda:N, or auto "
                      "(cuda when a device is visible). The control block stays in host memory.")
    gpus: int = opt(1, "With --device cuda: spread the workers over this many visible GPUs (the "
                    "arena's first; direct and server protocols). Each computes on its own GPU from a "
                    "copy and updates the arena on the arena's GPU.", type=int)
    on_node_failure: str = opt("stop", "Server protocols across nodes (K-variants, apam/hogwild "
                               "--protocol server): stop (every node, naming the lost one) or "
                               "continue without the lost node, while the rest can still make K.",
                               scope=RUN)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["slow"] = list(self.slow)
        return d

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
