"""What every engine process (worker or server) sets up after it starts: arena views, the
problem's model and loss, the rule, its slot in the control block, and the checks every loop
makes (stop flag, parent alive, heartbeat)."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..config import Plan
from ..problems import import_problem_source
from .arena import Arena, ArenaHandle
from .control import PAUSED, READY


@dataclass(frozen=True)
class ProcessArgs:
    """Picklable arguments of an engine process (explicit, spawn-safe)."""

    rank: int                       # 0..P-1 learners; P is the server
    arena: ArenaHandle
    payload: bytes                  # pickle of (model factory, loss, Plan); unpickled after import
    problem_source: str | None      # module or file that defines the problem's functions
    data: tuple[str, ...]           # arena buffer names of the training tensors
    supervisor_pid: int


class Stopped(Exception):
    """Raised inside a loop when the run is over (stop flag, parent gone)."""


class Context:
    def __init__(self, args: ProcessArgs) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the supervisor's to handle
        self.args = args
        self.rank = args.rank
        os.environ["SHMOPT_RANK"] = str(args.rank)     # for user code: which learner am I
        if args.problem_source:
            import_problem_source(args.problem_source)
        model_fn, self.loss_fn, self.plan = pickle.loads(args.payload)
        self.plan: Plan
        cfg = self.plan.config
        torch.set_num_threads(self.plan.threads)
        if cfg.pin:
            import psutil
            cores = psutil.Process().cpu_affinity() or list(range(os.cpu_count() or 1))
            psutil.Process().cpu_affinity([cores[self.rank % len(cores)]])
        torch.manual_seed(cfg.seed + self.rank)
        self.generator = torch.Generator().manual_seed(cfg.seed + self.rank)
        self.arena = Arena.attach(args.arena)
        self.glob = self.arena.array("glob")[0]
        self.ctrl = self.arena.array("ctrl")
        self.slot = self.ctrl[self.rank]
        self.slot["pid"] = os.getpid()
        self.model_fn = model_fn
        self.rule = self.plan.rule
        replicas = self.plan.protocol == "replicas"     # this worker's own row of x and state
        self.x = self.arena.tensor("x")[self.rank] if replicas else self.arena.tensor("x")
        self.state = {s: self.arena.tensor(f"state_{s}")[self.rank] if replicas
                      else self.arena.tensor(f"state_{s}") for s in self.rule.state_names}
        self.data = tuple(self.arena.tensor(name) for name in args.data)
        self.n_rows = len(self.data[0])
        if self.rank < self.plan.workers:     # learners draw their straggler delays
            self.delay = self.plan.delay.sampler(cfg.seed + self.rank, self.plan.slow.get(self.rank, 1.0))
        self._next_parent_check = 0.0

    def _parent_alive(self) -> bool:
        """The supervisor's sentinel pipe closes when it dies, even before it is reaped (a
        zombie still answers ``kill(pid, 0)``)."""
        parent = multiprocessing.parent_process()
        if parent is not None and parent.pid == self.args.supervisor_pid:
            return parent.is_alive()
        try:
            os.kill(self.args.supervisor_pid, 0)
        except ProcessLookupError:
            return False
        return True

    def ready(self) -> None:
        self.slot["t_ready"] = self.slot["heartbeat"] = time.time()
        self.slot["status"] = READY

    def check(self) -> None:
        """Heartbeat; raise Stopped when the run is over or the supervisor is gone."""
        now = time.time()
        self.slot["heartbeat"] = now
        if self.glob["stop"]:
            raise Stopped
        if self.glob["pause"]:
            self._pause()
        if now >= self._next_parent_check:
            self._next_parent_check = now + 0.1
            if not self._parent_alive():
                raise Stopped

    def _pause(self) -> None:
        """Hold still (between updates) while the supervisor writes a checkpoint."""
        status = int(self.slot["status"])
        self.slot["status"] = PAUSED
        while self.glob["pause"] and not self.glob["stop"]:
            time.sleep(0.0005)
            self.slot["heartbeat"] = time.time()
        self.slot["status"] = status

    def wait(self, waitable: Any, timeout: float | None = None) -> bool:
        """Block on a semaphore/event in short slices, checking stop and parent between them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.check()
            slice_ = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if slice_ <= 0:
                return False
            got = waitable.acquire(timeout=slice_) if hasattr(waitable, "acquire") \
                else waitable.wait(timeout=slice_)
            if got:
                return True

    def sleep(self, seconds: float) -> None:
        """An injected delay, in slices, still answering stop."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, 0.1))

    def sample(self) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(self.n_rows, (self.plan.batch_size,), generator=self.generator)
        return tuple(t.index_select(0, idx) for t in self.data)
