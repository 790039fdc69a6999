"""The supervisor (:class:`Engine`): builds the arena, starts the process group, watches it,
evaluates, checkpoints, stops.

Shutdown protocol (``Engine.close``, idempotent, always reached through ``finally``/``__exit__``
and a ``weakref.finalize`` safety net):

1. ``glob.stop = 1``; set the start event and release every semaphore, so no process sleeps on
   one. Every loop checks the flag at least every 0.1 s (``Context.check``, ``wakeups.wait_on``).
2. Join every process against one deadline (``group.JOIN_TIMEOUT_S``, 5 s).
3. ``terminate()`` what is still alive, join 1 s; ``kill()`` the rest and reap it.
4. Copy the final parameters into a private model, drop every view of the arena, unlink its name
   and detach. Nothing is left in /dev/shm, whatever happened before.

Workers notice a dead supervisor within 0.1 s and exit; the segment of a SIGKILLed supervisor is
removed by multiprocessing's resource tracker when the last process holding it exits, else by the
next start's sweep (``memory.sweep_stale_segments``) or by ``shmopt clean``.
"""
from __future__ import annotations

import pickle
import time
import warnings
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from ..config import Config
from ..config_rules import stored_config
from ..devices import resolve_device
from ..errors import ConfigError, ShmoptError, WorkerError
from ..memory import Arena, sweep_stale_segments, sweep_stale_semaphores
from ..memory.flat import buffers_numel, numel
from ..memory.shm import check_shm_space
from ..memory.tables import fixed_buffers, mark_tables, meta_nbytes
from ..plan import Plan, resolve
from ..problems import Problem
from ..strategies.adaptive_k import KTracker
from ..table_plan import find_tables, with_tables
from . import checkpoint, reshard, reshard_nodes, roles
from .checkpoint_files import CheckpointFiles, check_space, size_of
from .checkpoint_writer import BackgroundWriter
from .checkpointing import Checkpointing
from .control import PAUSE_ALL
from .evaluations import Evaluations
from .evaluator import Evaluator
from .group import ProcessGroup, shutdown
from .layout import Buffers, build_layout, checkpoint_skip
from .mailbox import GradientMailbox
from .model_view import the_model
from .nodes.finish import finish_nodes, halt_nodes
from .nonfinite import NonFiniteWatch
from .record import Result, RunRecord, Sample, node_summary, summary
from .run_view import describe

POLL_S = 0.01


class Engine(Checkpointing):
    """Run one training job; a context manager.

    >>> with Engine(problem, Config(algo="apam", workers=2, steps=1000)) as eng:
    ...     result = eng.run()
    """

    def __init__(self, problem: Problem, config: Config | None = None, *, source: str | None = None,
                 on_sample: Callable[[Sample], None] | None = None,
                 problem_options: dict[str, Any] | None = None) -> None:
        self.config = config = config or Config()
        self.problem_options = dict(problem_options or {})     # recorded in checkpoints, with source
        if resolve_device(config.device) == "cpu" and (need := meta_nbytes(problem.model)):
            check_shm_space(need)               # before any private build of a table too large
        problem.validate()                      # everything is checked before any process starts
        self.problem = problem
        self.plan: Plan = resolve(self.config, problem)      # validates, no side effect
        self.source = source
        self.on_sample = on_sample
        self.record = RunRecord()
        self.arena: Arena | None = None
        self.group: ProcessGroup | None = None
        self._closed = self._started = False
        self._finalizer: weakref.finalize | None = None
        self._final_stats: dict | None = None
        self.model: torch.nn.Module | None = None
        self._evals: Evaluations | None = None
        with torch.random.fork_rng():           # the caller's RNG state is left alone
            torch.manual_seed(self.plan.worker.seed)
            self._template = problem.model()
        self.plan = with_tables(self.plan, find_tables(problem))     # refused here, before any start
        self._fixed = fixed_buffers(self._template) if self.plan.tables else {}
        self._tables = mark_tables(self._template, tuple(t.name for t in self.plan.tables))
        self.n_params = numel(self._template)   # the dense parameters: tables live beside them
        self._rows = problem.rows              # in memory: copied into the arena; mapped or a dataset: not
        self._train = tuple(t.contiguous() for t in self._rows.in_memory)
        self._resume_doc = self._reshard = None
        if self.plan.supervisor.resume:        # refuse a foreign checkpoint before anything starts
            doc, self._resume_path = reshard_nodes.load_for(self.plan.supervisor.resume, self.plan)
            self._resume_doc = doc
            self._reshard = reshard_nodes.needs_reshard(self._resume_doc, self.plan)
        carried = reshard.carried(self._resume_doc, reshard.Seats.of(self.plan)) if self._reshard else 0
        self.layout = build_layout(self.plan, self.n_params, self._train, buffers_numel(self._template),
                                   carried)
        self.evaluator = Evaluator(problem, self._template, self.n_params, self.plan.supervisor.eval_samples,
                                   self.plan.tables)
        if self.plan.supervisor.target_accuracy is not None and "accuracy" not in problem.metric_names(
                self._template):
            raise ConfigError(f"--target-accuracy: problem {problem.name!r} reports no accuracy (give it "
                              f"a metrics function returning {{'accuracy': ...}})")
        self._ckpt_skip = checkpoint_skip(self.plan, len(self._train))
        self._ckpt_files, self._writer = None, BackgroundWriter()
        self._staged: dict[str, torch.Tensor] | None = None     # a staged checkpoint's private copy, kept
        if self.plan.supervisor.checkpoint:    # room for this run's checkpoints, before any start
            sp = self.plan.supervisor
            check_space(sp.checkpoint, size_of(self.layout, self._ckpt_skip), sp.keep)
            self._ckpt_files = CheckpointFiles(sp.checkpoint, sp.keep)
        if self._resume_doc is not None:
            path = self._resume_path
            stored_config(self._resume_doc.get("config"), path)   # the same checks as a new run's options
            identity = self._ckpt_identity()
            if self._reshard:                  # another worker count: what depends on it is rebuilt
                identity.pop("workers")
            checkpoint.check_compatible(self._resume_doc, path, identity, self.layout,
                                        self._ckpt_skip + (reshard.PER_WORKER if self._reshard else ()))

    @property
    def history(self) -> list[Sample]:
        return self.record.history

    @property
    def procs(self) -> list:
        return self.group.procs if self.group else []

    @property
    def failures(self) -> list[dict]:
        """Failures survived by restarting the rank (on_worker_failure="restart")."""
        return self.group.failures if self.group else []

    # ---------------------------------------------------------------- start
    def start(self) -> "Engine":
        if self._started:
            raise RuntimeError("engine already started")
        self._started = True
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        plan, sp = self.plan, self.plan.supervisor
        sweep_stale_segments()
        sweep_stale_semaphores()                # multiprocessing's, of runs killed as a whole
        if self._ckpt_files is not None:       # a killed run's half-written checkpoint
            self._ckpt_files.sweep_temporaries()
        self.arena = arena = Arena.create(self.layout, f"n{plan.nodes.rank}" if plan.nodes else "",
                                          describe(plan, self.problem.name, self.source))   # for top
        self.buffers = b = Buffers.of(arena, plan)
        self.mailbox = GradientMailbox(arena, plan.workers, plan.tables) if plan.server is not None else None
        glob = arena.array("glob")
        self.group = group = ProcessGroup(arena.export, b.ctrl, glob,
                                          pickle.dumps((self.problem.model, self.problem.loss,
                                                        self.problem.augment, plan, self._fixed,
                                                        self._rows.for_workers())),
                                          self.source, plan)
        self._finalizer = weakref.finalize(self, _release, arena, glob, group)
        if self._resume_doc is not None:
            if self._reshard:
                reshard.restore(self._resume_doc, arena, plan)
            else:
                checkpoint.restore(self._resume_doc, arena)
            if self.mailbox is not None:       # gradients in flight at the checkpoint are dropped
                self.mailbox.reset()
            self._resume_doc = None
        else:
            b.dense[...] = self.evaluator.initial_params()   # every replica starts from x0 (or see
            for table, p in zip(b.tables, self._tables):     # replica_init), its tables included
                table[...] = p.detach().reshape(table.shape[-2:])
            if plan.replicas is not None:
                plan.replicas.init(b.extra, b.x[0])
            if b.mbuf is not None:
                b.mbuf[...] = self.evaluator.initial_buffers()
            plan.rule.init(b.state)
            for state in b.table_state:
                plan.table_rule.init(state)
        self._tables = []                      # the template's private tables: dropped for views
        self.evaluator.read_tables(b.x if plan.replicas is None else b.x[0])
        for dst, t in zip(b.data, self._train):
            dst.copy_(t)
        if plan.server is not None and plan.server.adaptive:   # --k adaptive: a checkpoint's K, or the start
            self.record.k_tracker = KTracker.resumed(plan.server.adaptive, int(b.glob["k"]))
            b.glob["k"] = self.record.k_tracker.k          # before any process starts
        arena.sync()                           # a CUDA block is complete before any export
        every = sp.checkpoint_every
        self._next_ckpt = (self.updates() // every + 1) * every if every else None
        self._nonfinite = NonFiniteWatch(plan.workers)
        self._evals = Evaluations(self, open(sp.log, "w", encoding="utf-8") if sp.log else None)
        self.record.t_spawn = time.time()
        group.start()
        # across nodes the node link first meets the other nodes (at most --dist-timeout)
        group.wait_ready(sp.startup_timeout + (plan.nodes.timeout if plan.nodes else 0.0),
                         self.check_processes)
        self.record.t_go = time.time()
        self._evals.now()                  # the initial parameters: the curve's first point
        self.record.t_go = b.glob["t_go"] = time.time()
        self._evals.go()
        group.wakeups.start()

    # ---------------------------------------------------------------- watch
    def check_processes(self) -> None:
        """Raise WorkerError for a process that raised, died or hung (or restart it)."""
        sp = self.plan.supervisor
        try:
            self.group.find_failure(sp.heartbeat_timeout)
        except WorkerError as err:
            if not sp.restart or not self.record.t_go or err.rank < 0 or (
                    self.plan.nodes is not None and not roles.is_learner(err.rank, self.plan)):
                raise                         # the node link's collectives cannot be resumed
            self.group.restart(err, sp.max_restarts, time.time() - self.record.t_go,
                               self.mailbox.reset if self.mailbox else lambda: None)
            warnings.warn(f"shmopt: {err}; restarting it ({len(self.group.failures)} restart(s) so far)",
                          RuntimeWarning, stacklevel=2)

    def updates(self) -> int:
        b = self.buffers
        if self.plan.server is not None:
            return int(b.glob["version"])
        return int(b.ctrl["updates"][:self.plan.workers].sum())

    def evaluate(self, x: torch.Tensor, buffers: torch.Tensor | None = None) -> float:
        """Objective of the given flat parameters on the eval data (private copy, no grad)."""
        return self.evaluator.loss(x, buffers)

    def leader(self) -> int | None:
        """The replica method's leader right now (lsgd: the lowest windowed mean loss), or None."""
        if self.plan.replicas is None:
            return None
        ctrl, P = self.buffers.ctrl, self.plan.workers
        return self.plan.replicas.leader(ctrl["losses"][:P], ctrl["loss_count"][:P])

    def poll(self) -> str | None:
        """One supervision step: check processes, evaluate when due; the stop reason or None."""
        self.check_processes()
        self._nonfinite.check(self.buffers.ctrl)
        sp = self.plan.supervisor
        if self.plan.nodes is not None and self.buffers.glob["peer_finish"]:
            return "peer"                     # another node ended the job (target, Ctrl-C)
        if self.plan.replicas is not None and self.record.t_go:
            self.record.track_leader(self.leader())
        if self._next_ckpt is not None and self.updates() >= self._next_ckpt and not self._writer.busy:
            self.write_checkpoint(background=True)     # due: once the one before is written
            self._next_ckpt = (self.updates() // sp.checkpoint_every + 1) * sp.checkpoint_every
        if self.plan.steps is not None and self.updates() >= self.plan.steps:
            return "steps"
        if sp.time_limit is not None and time.time() - self.record.t_go >= sp.time_limit:
            return "time_limit"
        if (s := self._evals.poll()) is not None:      # due ones start, finished ones come back
            if sp.target_loss is not None and s.loss is not None and s.loss <= sp.target_loss:
                return "target_loss"
            accuracy = (s.metrics or {}).get("accuracy", -1.0)
            if sp.target_accuracy is not None and accuracy >= sp.target_accuracy:
                return "target_accuracy"
        return None

    def run(self) -> Result:
        """Start (if needed), supervise until a stop condition, close; return the result."""
        rec = self.record
        try:
            if not self._started:
                self.start()
            try:
                while not (reason := self.poll()):
                    self.group.wait(POLL_S)
                if self.plan.nodes is not None:
                    finish_nodes(self, reason)
            except KeyboardInterrupt:
                rec.stop_reason = "interrupted"
                halt_nodes(self)
                raise
            except ShmoptError:
                raise
            except BaseException:               # SIGTERM (the CLI's Terminated), SystemExit
                halt_nodes(self)
                raise
            rec.stop_reason = reason
            rec.t_stop = time.time()
            self.buffers.glob["stop"] = 1
            self.group.close()          # the last evaluation sees the final bytes: no forward
            self._evals.now(rec.t_stop)  # still moving BatchNorm statistics, no step in flight
            rec.final_loss = rec.history[-1].loss
            return Result(self.close(), [s.to_dict() for s in rec.history], self.stats())
        finally:
            self.close()

    @contextmanager
    def _quiesced(self) -> Iterator[None]:
        """Read a CUDA arena only while every process is paused or idle with its device work done
        (the supervisor's own synchronize would not wait for other processes' kernels)."""
        if self.arena.device.type == "cpu" or self.group is None or not self.group.live():
            yield
            return
        glob = self.buffers.glob
        glob["pause"] = PAUSE_ALL
        try:
            self.group.wait_paused(self.plan.supervisor.heartbeat_timeout)
            yield
        finally:
            glob["pause"] = 0

    # ---------------------------------------------------------------- stats
    def stats(self, partial: bool = False) -> dict[str, Any]:
        """Counters summed over the control block (lock-free reads) and derived figures."""
        if self._final_stats is not None:
            return self._final_stats
        extra: dict[str, Any] = {"parameters": self.n_params}
        if not partial:
            extra.update(optimum=self.problem.optimum, arena=self.arena.name,
                         arena_bytes=self.layout.nbytes,
                         restarts=len(self.group.failures) if self.group else 0)
        st = summary(self.plan, self.buffers.ctrl, self.updates(), self.record, partial, **extra)
        if self.plan.nodes is not None:
            book = self.arena.array("node_book") if "node_book" in self.arena else None
            st.update(node_summary(self.plan, self.buffers.glob, st["updates"], st["wall_s"], book))
        return st

    # ---------------------------------------------------------------- close
    def close(self) -> torch.nn.Module | None:
        """Stop every process and release the shared memory (idempotent). Returns the final
        model: a private nn.Module holding the last shared parameters."""
        if self._closed:
            return self.model
        self._closed = True
        try:
            if self._evals is not None:
                self._evals.abandon()                      # no evaluation reads a closed arena
            if self.arena is not None:
                self.buffers.glob["stop"] = 1
                if self.group is not None:
                    self.group.close()
                self._writer.join()                        # a checkpoint in flight ends first
                if self.plan.supervisor.checkpoint and self.record.t_go:
                    self.write_checkpoint(pause=False, final=True)   # quiescent: every process stopped
                self._final_stats = self.stats()
                self.model = self.evaluator.final_model(*the_model(self.plan, self.buffers, self.leader()))
        finally:
            if self._finalizer is not None:
                self._finalizer.detach()
            if self.group is not None:
                self.group.close()                         # no-op unless the try block failed early
            if self.arena is not None:
                self.evaluator.release_tables()           # no view outlives the block
                self.buffers = self.mailbox = self._staged = None
                self.arena.close()
            if self._evals is not None and self._evals.log:
                self._evals.log.close()
        return self.model

    def __enter__(self) -> "Engine":
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _release(arena: Arena, glob, group: ProcessGroup) -> None:
    """The finalizer's shutdown (must not reference the Engine)."""
    shutdown(glob, group.procs, group.wakeups)
    arena.close()
