"""What every engine process (a learner or rank P: engine.roles) sets up after it starts: the
problem's model and loss, its thread budget and seeds, the arena views, its own counters, and the
checks every loop makes (stop flag, pause, parent alive, heartbeat)."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from dataclasses import dataclass
from functools import partial

import torch

from ..memory import Arena, ArenaHandle
from ..memory.backends import fence_for, local_device
from ..memory.flat import bind_buffers
from ..memory.tables import build_attached
from ..plan import Plan
from ..problems import import_problem_source
from ..problems.streams import StreamReader, StreamRows
from ..problems.worker_info import WorkerInfo, set_worker_info
from ..strategies.sampling import Sampler
from . import roles
from .control import PAUSE_ALL, PAUSED, READY, Counters
from .layout import Buffers


@dataclass(frozen=True)
class ProcessArgs:
    """Picklable arguments of an engine process (explicit, spawn-safe)."""

    rank: int                       # 0..P-1 learners; P: the applier, relay or node link (engine.roles)
    arena: ArenaHandle
    payload: bytes                  # pickle of (model factory, loss, augment, Plan), after import
    problem_source: str | None      # module or file that defines the problem's functions
    supervisor_pid: int
    error_file: str                 # where a failure's report goes (a file never blocks)


class Stopped(Exception):
    """Raised inside a loop when the run is over (stop flag, parent gone)."""


class Context:
    def __init__(self, args: ProcessArgs) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the supervisor's to handle
        # processes this one starts (a DataLoader's workers in a stream) use the platform's default
        # method, not the one this process was started with (which spawn's preparation made the
        # default): forked, they see the problem file's module, imported here under its own name
        multiprocessing.set_start_method(None, force=True)
        self.args = args
        self.rank = args.rank
        if args.problem_source:
            import_problem_source(args.problem_source)
        model_fn, self.loss_fn, self.augment, plan, fixed, rows = pickle.loads(args.payload)
        self.plan: Plan = plan
        wp = plan.worker
        seed = wp.seed + wp.rank_offset + self.rank         # across nodes: distinct for every worker
        group = plan.replicas.group_of(self.rank) if plan.replicas is not None else 0
        set_worker_info(WorkerInfo(self.rank, plan.workers, group, seed, wp.device,
                                   wp.rank_offset + self.rank, wp.learners))
        torch.set_num_threads(wp.threads)
        if wp.pin:
            import psutil
            cores = psutil.Process().cpu_affinity() or list(range(os.cpu_count() or 1))
            psutil.Process().cpu_affinity([cores[self.rank % len(cores)]])
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.device = torch.device(wp.device)          # the arena's
        self.compute = self.device                      # where this learner's forward/backward run
        if wp.gpus and roles.is_learner(self.rank, plan):
            self.compute = local_device(self.device, wp.gpus[self.rank % len(wp.gpus)])
        self._to_arena: torch.Tensor | None = None
        self._model_fn = partial(_on_device, model_fn, self.compute)
        self.fence = fence_for(self.device)          # before every host counter that counts device work
        self.arena = Arena.attach(args.arena)
        self.buffers = b = Buffers.of(self.arena, plan)
        self.glob = b.glob
        self.counters = Counters(b.ctrl[self.rank])
        self.counters.slot["pid"] = os.getpid()
        learner = roles.is_learner(self.rank, plan)
        own = plan.replicas is not None and learner   # replicas: this worker's own row of x, state
        self.x = b.dense[self.rank] if own else b.dense          # the dense parameters the rule updates
        self.state = {s: t[self.rank] if own else t for s, t in b.state.items()}
        self.tables = tuple(t[self.rank] if own else t for t in b.tables)
        self.table_state = tuple({k: t[self.rank] if own else t for k, t in st.items()}
                                 for st in b.table_state)
        if plan.tables:                     # built on the meta device, the tables attached: no private copy
            views = {t.name: v for t, v in zip(plan.tables, self.tables)}
            self._model_fn = partial(build_attached, model_fn, views, fixed)
        self.rows = rows.attach(b.data)
        self.sampler = self.stream = None
        if learner and isinstance(self.rows, StreamRows):       # read in order
            self.stream = StreamReader(self.rows, plan.batch_size, self.counters.slot)
        elif learner:
            order = b.order[self.rank] if b.order is not None else None
            self.sampler = Sampler(wp.sampling, self.rows.n, plan.batch_size, wp.rank_offset + self.rank,
                                   wp.learners, self.generator, order, self.counters.slot)
        if learner:                         # learners draw their straggler delays
            self.delay = wp.delay.sampler(seed, wp.slow.get(self.rank, 1.0))
        # across nodes the learners of direct and replica protocols stop on the node's vote; the
        # learners of sync keep pushing until the applier's last collective
        self._stop_on_finish = learner and plan.nodes is not None and plan.server is None
        self._next_parent_check = 0.0

    def model_fn(self) -> torch.nn.Module:
        """The problem's model on this learner's compute device, its floating-point buffers
        (BatchNorm statistics) bound into the arena: every worker's forward updates the shared
        statistics in place, lock-free (a replica its own row). A learner on another GPU than
        the arena's keeps its own."""
        model = self._model_fn()
        mbuf = self.buffers.mbuf
        if mbuf is not None and not self.remote:
            own = self.plan.replicas is not None and roles.is_learner(self.rank, self.plan)
            bind_buffers(model, mbuf[self.rank] if own else mbuf)
        return model

    @property
    def remote(self) -> bool:
        """This learner computes on another GPU than the arena's (--gpus > 1)."""
        return self.compute != self.device

    def local_copy(self, like: torch.Tensor) -> torch.Tensor:
        """A private buffer shaped like ``like`` on this learner's compute device."""
        return torch.zeros(like.shape, dtype=like.dtype, device=self.compute)

    def to_arena(self, g: torch.Tensor) -> torch.Tensor:
        """``g`` on the arena's device (a copy into one reused buffer when it is elsewhere): the
        update kernel runs where the arena is, never dereferencing it from another GPU."""
        if g.device == self.device:
            return g
        if self._to_arena is None:
            self._to_arena = torch.empty(g.shape, dtype=g.dtype, device=self.device)
        return self._to_arena.copy_(g)

    def mark_idle(self, idle: bool) -> None:
        """Idle: waiting, with this process's device work done (it fenced before it waited)."""
        if idle:
            self.fence()
        self.counters.slot["idle"] = int(idle)

    def release(self) -> None:
        """At exit: finish this process's device work and drop its views of a CUDA arena (the
        owner frees the block only when no consumer holds it)."""
        self.fence()
        if self.device.type != "cpu":              # a device block: drop the views before exit
            self.x = self.state = self.buffers = None
            self.arena.release_device()

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
        self.counters.slot["t_ready"] = self.counters.heartbeat()
        self.counters.set_status(READY)

    def check(self) -> None:
        """Heartbeat; raise Stopped when the run is over or the supervisor is gone; pause."""
        self.check_abort()
        if self._stop_on_finish and self.glob["finish"]:
            raise Stopped
        pause = self.glob["pause"]
        if pause and (pause == PAUSE_ALL or not roles.is_learner(self.rank, self.plan)):
            self._pause()

    def check_abort(self) -> None:
        """Heartbeat; raise Stopped on the stop flag or a dead supervisor (no pause: the node
        link calls this while a collective is in flight)."""
        now = self.counters.heartbeat()
        if self.glob["stop"]:
            raise Stopped
        if now >= self._next_parent_check:
            self._next_parent_check = now + 0.1
            if not self._parent_alive():
                raise Stopped

    def _pause(self) -> None:
        """Hold still (between updates) while the supervisor reads the shared state."""
        status = int(self.counters["status"])
        self.fence()                                  # the supervisor reads the device buffers next
        self.counters.set_status(PAUSED)
        while self.glob["pause"] and not self.glob["stop"]:
            time.sleep(0.0005)
            self.counters.heartbeat()
        self.counters.set_status(status)

    def sleep(self, seconds: float) -> None:
        """An injected delay, in slices of at most 0.1 s, still answering stop."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, 0.1))

    def sample(self) -> tuple[torch.Tensor, ...]:
        # a field in the arena is indexed where it lives; one mapped from a file, a dataset's and a
        # stream's are read on the CPU and then moved to the arena's device
        batch = self.stream.next() if self.stream is not None else self.rows.take(self.sampler.next())
        if self.device.type != "cpu":
            batch = tuple(t if t.device == self.device else t.to(self.device, non_blocking=True)
                          for t in batch)
        if self.remote:
            batch = tuple(t.to(self.compute) for t in batch)
        return batch if self.augment is None else tuple(self.augment(batch, self.generator))


def _on_device(model_fn, device: torch.device) -> torch.nn.Module:
    """The problem's model, built on the CPU as its factory does, moved to the arena's device
    (buffers included; the loops then bind its parameters into the arena)."""
    model = model_fn()
    return model if device.type == "cpu" else model.to(device)
