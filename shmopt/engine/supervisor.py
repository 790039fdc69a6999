"""The supervisor: builds the arena, starts the processes, watches them, evaluates, stops.

Shutdown protocol (``Engine.close``, idempotent, always reached through ``finally``/``__exit__``
and a ``weakref.finalize`` safety net):

1. ``glob.stop = 1``; set the start event and release every semaphore, so no process sleeps on
   one. Every loop checks the flag at least every 0.1 s (``Context.check``/``Context.wait``).
2. Join every process against one deadline (``join_timeout``, 5 s).
3. ``terminate()`` what is still alive, join 1 s; ``kill()`` the rest and reap it.
4. Copy the final parameters into a private model, drop every view of the arena, unlink its name
   and detach. Nothing is left in /dev/shm, whatever happened before.

Workers notice a dead supervisor within 0.1 s (``os.kill(pid, 0)``) and exit; the segment of a
SIGKILLed supervisor is removed by multiprocessing's resource tracker when the last process
holding it exits, else by the next start's sweep (``storage.sweep_stale_segments``) or by
``shmopt clean``.
"""
from __future__ import annotations

import json
import multiprocessing.connection as mpc
import os
import pickle
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..config import Config, Plan, resolve
from ..errors import WorkerError
from ..problems import Problem
from ..strategies.leader import select_leader, windowed_means
from . import checkpoint
from .arena import Arena
from .context import ProcessArgs
from .control import DONE, PAUSED, READY, RUNNING, STARTING
from .flat import bind_params, numel
from .layout import build_layout, data_names
from .processes import release_all, signal_name, start_context
from .stats import Sample, collect_stats
from .storage import sweep_stale_segments
from .worker import process_main

if TYPE_CHECKING:
    from ..api import Result

POLL_S = 0.01


class Engine:
    """Run one training job; a context manager.

    >>> with Engine(problem, Config(algo="apam", workers=2, steps=1000)) as eng:
    ...     result = eng.run()
    """

    def __init__(self, problem: Problem, config: Config | None = None, *, source: str | None = None,
                 on_sample: Callable[[Sample], None] | None = None) -> None:
        self.problem = problem
        self.config = config or Config()
        self.plan: Plan = resolve(self.config, problem)      # validates, no side effect
        self.source = source
        self.on_sample = on_sample
        self.history: list[Sample] = []
        self.arena: Arena | None = None
        self.procs: list = []
        self._sync: dict = {}
        self._closed = False
        self._started = False
        self._finalizer: weakref.finalize | None = None
        self.t_spawn = self.t_go = self.t_stop = 0.0
        self.stop_reason: str | None = None
        self.final_loss: float | None = None
        self.model: torch.nn.Module | None = None
        self._log = None
        self._leader: int | None = None
        self.leader_changes = 0
        self.failures: list[dict] = []          # restarted failures (on_worker_failure="restart")
        self._reports: dict[int, tuple[str, str]] = {}
        self.checkpoints = 0
        with torch.random.fork_rng():           # the caller's RNG state is left alone
            torch.manual_seed(self.config.seed)
            self._template = problem.model()
        self.n_params = numel(self._template)
        self._train = tuple(t.contiguous() for t in problem.train)
        self.layout = build_layout(self.plan, self.n_params, self.plan.rule.state_names, self._train)
        self._data_names = tuple(data_names(self._train, "data"))
        self._ckpt_skip = self._data_names + checkpoint.SCRATCH
        self._resume_doc = None
        if self.config.resume:                  # refuse a foreign checkpoint before anything starts
            self._resume_doc = checkpoint.load(self.config.resume)
            checkpoint.check_compatible(self._resume_doc, self.config.resume, self._ckpt_identity(),
                                        self.layout, self._ckpt_skip)

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

    def _ckpt_identity(self) -> dict:
        """What a checkpoint must share with this run to be resumed by it."""
        p = self.plan
        return {"algo": p.algo, "rule": p.rule.name, "protocol": p.protocol, "variant": p.variant,
                "k": p.k, "workers": p.workers, "parameters": self.n_params,
                "model": checkpoint.model_signature(self._template),
                "data": checkpoint.data_digest(self._train)}

    def _start(self) -> None:
        plan, problem, cfg = self.plan, self.problem, self.config
        sweep_stale_segments()
        template, layout = self._template, self.layout
        self.arena = arena = Arena.create(layout)
        self._finalizer = weakref.finalize(self, release_all, arena, self.procs, self._sync)
        if self._resume_doc is not None:
            checkpoint.restore(self._resume_doc, arena)
            self._resume_doc = None
        else:
            x0 = torch.cat([p.detach().reshape(-1) for p in template.parameters()])
            arena.tensor("x")[...] = x0             # every replica starts from x0 (or see replica_init)
            if "center" in layout:
                arena.tensor("center").copy_(x0)
            plan.rule.init({s: arena.tensor(f"state_{s}") for s in plan.rule.state_names})
        names = self._data_names
        for name, t in zip(names, self._train):
            arena.tensor(name).copy_(t)
        self._next_ckpt = (self.updates() // cfg.checkpoint_every + 1) * cfg.checkpoint_every \
            if cfg.checkpoint_every else None
        self._eval_setup(template)
        if cfg.log:
            self._log = open(cfg.log, "w", encoding="utf-8")
        ctx = start_context(cfg.start_method)
        P = plan.workers
        self._sync.update(go=ctx.Event(), push=ctx.Semaphore(0),
                          release=[ctx.Semaphore(0) for _ in range(P)])
        self._errors = ctx.SimpleQueue()
        self._ctx = ctx
        self._payload = pickle.dumps((problem.model, problem.loss, plan))
        ranks = list(range(P + (1 if plan.protocol == "server" else 0)))
        self.t_spawn = time.time()
        for rank in ranks:
            self.procs.append(self._spawn(rank))
        self._wait_ready()
        self.t_go = time.time()
        self._evaluate()                   # the initial parameters: the curve's first point
        self.t_go = time.time()
        arena.array("glob")[0]["t_go"] = self.t_go
        self._sync["go"].set()

    def _spawn(self, rank: int):
        args = ProcessArgs(rank, self.arena.handle, self._payload, self.source, self._data_names,
                           os.getpid())
        p = self._ctx.Process(target=process_main,
                              name=f"shmopt-{'server' if rank == self.plan.workers else rank}",
                              args=(args, self._sync["go"], self._sync["push"], self._sync["release"],
                                    self._errors), daemon=True)
        p.start()
        return p

    def _restart(self, err: WorkerError) -> None:
        """on_worker_failure="restart": respawn the rank; the shared state carries on."""
        rank, cfg = err.rank, self.config
        if sum(f["rank"] == rank for f in self.failures) >= cfg.max_restarts:
            raise WorkerError(f"{err} (after {cfg.max_restarts} restarts of this rank)", err.rank,
                              err.pid, err.exitcode, err.traceback)
        p = self.procs[rank]
        if p.is_alive():                      # hung: it must go before its slot is reused
            p.kill()
            p.join(2.0)
        self.failures.append({"rank": rank, "pid": err.pid, "error": str(err), "t": time.time() - self.t_go})
        warnings.warn(f"shmopt: {err}; restarting it ({len(self.failures)} restart(s) so far)",
                      RuntimeWarning, stacklevel=2)
        ctrl = self.arena.array("ctrl")
        ctrl[rank]["status"] = STARTING
        ctrl[rank]["heartbeat"] = time.time()
        if rank == self.plan.workers:         # the server: drop gradients in flight, wake everyone
            P = self.plan.workers
            self.arena.array("consumed")[:, 0] = ctrl["pushed"][:P]
            for sem in self._sync["release"]:
                sem.release()
        self.procs[rank] = self._spawn(rank)

    def _wait_ready(self) -> None:
        ctrl = self.arena.array("ctrl")
        deadline = time.monotonic() + self.config.startup_timeout
        while True:
            self._check_processes()
            if all(ctrl[r]["status"] >= READY for r in range(len(self.procs))):
                return
            if time.monotonic() > deadline:
                raise WorkerError(f"workers did not start within {self.config.startup_timeout} s "
                                  f"(--startup-timeout)")
            mpc.wait([p.sentinel for p in self.procs], timeout=POLL_S)

    # ---------------------------------------------------------------- watch
    def _check_processes(self) -> None:
        """Raise WorkerError for a process that raised, died or hung (or restart it)."""
        try:
            self._find_failure()
        except WorkerError as err:
            if self.config.on_worker_failure != "restart" or not self.t_go or err.rank < 0:
                raise
            self._restart(err)

    def _find_failure(self) -> None:
        ctrl = self.arena.array("ctrl")
        now = time.time()
        for rank, p in enumerate(self.procs):
            role = "server" if rank == self.plan.workers else f"worker {rank}"
            if p.exitcode is not None and p.exitcode != 0:
                while not self._errors.empty():          # reports of every failed process, by pid
                    _, pid, what_r, tb_r = self._errors.get()
                    self._reports[pid] = (what_r, tb_r)
                what, tb = self._reports.pop(p.pid, ("", ""))
                if what:
                    msg = f"{role} (pid {p.pid}) raised {what}"
                elif p.exitcode < 0:
                    msg = f"{role} (pid {p.pid}) was killed by {signal_name(p.exitcode)}"
                else:
                    msg = f"{role} (pid {p.pid}) exited with code {p.exitcode}"
                raise WorkerError(msg, rank, p.pid, p.exitcode, tb)
            st = ctrl[rank]
            if p.exitcode is None and st["status"] == RUNNING \
                    and now - st["heartbeat"] > self.config.heartbeat_timeout:
                raise WorkerError(f"{role} (pid {p.pid}) sent no heartbeat for "
                                  f"{now - st['heartbeat']:.1f} s (--heartbeat-timeout)", rank, p.pid)

    def updates(self) -> int:
        ctrl = self.arena.array("ctrl")
        if self.plan.protocol == "server":
            return int(self.arena.array("glob")[0]["version"])
        return int(ctrl["updates"][:self.plan.workers].sum())

    def _eval_setup(self, template: torch.nn.Module) -> None:
        data = tuple(t[:self.config.eval_samples] for t in self.problem.eval_data())
        self._eval_data = data
        self._eval_x = torch.empty(self.n_params)
        self._eval_model = template
        bind_params(template, self._eval_x)
        self._next_eval = 0.0

    def evaluate(self, x: torch.Tensor) -> float:
        """Objective of the given flat parameters on the eval data (private copy, no grad)."""
        self._eval_x.copy_(x)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                return float(self.problem.loss(self._eval_model, self._eval_data))
        finally:
            torch.set_num_threads(threads)

    def leader(self) -> int | None:
        """Replica protocols (lsgd): the worker with the lowest windowed mean loss right now."""
        if self.plan.variant != "lsgd":
            return None
        ctrl, P = self.arena.array("ctrl"), self.plan.workers
        return select_leader(windowed_means(ctrl["losses"][:P], ctrl["loss_count"][:P],
                                            self.config.window))

    def model_params(self) -> torch.Tensor:
        """The flat parameters that are "the model": the shared x, the leader's replica (lsgd)
        or the centre variable (easgd)."""
        x = self.arena.tensor("x")
        if self.plan.protocol != "replicas":
            return x
        if self.plan.variant == "easgd":
            return self.arena.tensor("center")
        return x[self.leader()]

    def _evaluate(self) -> Sample:
        t = time.time()
        leader = self.leader()
        self._track_leader(leader)
        loss = self.evaluate(self.model_params())
        st = self.stats(partial=True)
        s = Sample(round(max(t - self.t_go, 0.0), 4), st["updates"], loss, st["samples_per_s"],
                   st["staleness_mean"], st["gradients"], st["dropped"], leader)
        if self.plan.protocol == "replicas":
            X = self.arena.tensor("x")
            s.loss_average = self.evaluate(X.mean(0))
            s.loss_replicas = [self.evaluate(X[r]) for r in range(self.plan.workers)]
        self.history.append(s)
        self._next_eval = time.monotonic() + self.config.eval_interval
        if self._log:
            self._log.write(json.dumps(s.to_dict()) + "\n")
            self._log.flush()
        if self.on_sample:
            self.on_sample(s)
        return s

    def _track_leader(self, leader: int | None) -> None:
        if leader is not None and leader != self._leader:
            if self._leader is not None:
                self.leader_changes += 1
            self._leader = leader

    def poll(self) -> str | None:
        """One supervision step: check processes, evaluate when due; the stop reason or None."""
        self._check_processes()
        if self.plan.variant == "lsgd" and self.t_go:
            self._track_leader(self.leader())
        cfg, plan = self.config, self.plan
        if self._next_ckpt is not None and self.updates() >= self._next_ckpt:
            self.write_checkpoint(pause=True)
            self._next_ckpt = (self.updates() // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        if plan.steps is not None and self.updates() >= plan.steps:
            return "steps"
        if cfg.time_limit is not None and time.time() - self.t_go >= cfg.time_limit:
            return "time_limit"
        if time.monotonic() >= self._next_eval:
            s = self._evaluate()
            if cfg.target_loss is not None and s.loss is not None and s.loss <= cfg.target_loss:
                return "target_loss"
        return None

    def run(self) -> "Result":
        """Start (if needed), supervise until a stop condition, close; return the result."""
        from ..api import Result
        try:
            if not self._started:
                self.start()
            try:
                while True:
                    reason = self.poll()
                    if reason:
                        break
                    mpc.wait([p.sentinel for p in self.procs], timeout=POLL_S)
            except KeyboardInterrupt:
                reason = "interrupted"
                self.stop_reason = reason
                raise
            self.stop_reason = reason
            self.t_stop = time.time()
            self.arena.array("glob")[0]["stop"] = 1
            self._evaluate()
            self.final_loss = self.history[-1].loss
            return Result(self.close(), [s.to_dict() for s in self.history], self.stats())
        finally:
            self.close()

    # ---------------------------------------------------------------- checkpoints
    def write_checkpoint(self, pause: bool = True, path: str | None = None) -> str:
        """Write the whole shared state. With ``pause`` the processes first stop at a consistent
        point (between updates) and wait until the file is written."""
        path = path or self.config.checkpoint
        glob = self.arena.array("glob")[0]
        if pause:
            glob["pause"] = 1
            self._wait_paused()
        try:
            meta = dict(self._ckpt_identity(), config=self.config.to_dict(), seed=self.config.seed,
                        updates=self.updates())
            checkpoint.save(path, self.arena, meta, skip=self._ckpt_skip)
            self.checkpoints += 1
        finally:
            glob["pause"] = 0
        return path

    def _wait_paused(self, timeout: float = 30.0) -> None:
        ctrl = self.arena.array("ctrl")
        deadline = time.monotonic() + timeout
        while True:
            self._find_failure()
            live = [r for r, p in enumerate(self.procs) if p.exitcode is None]
            if all(ctrl[r]["status"] in (PAUSED, DONE) for r in live):
                return
            if time.monotonic() > deadline:
                raise WorkerError(f"workers did not pause for the checkpoint within {timeout} s")
            time.sleep(0.001)

    # ---------------------------------------------------------------- stats
    def stats(self, partial: bool = False) -> dict[str, Any]:
        """Counters summed over the control block (lock-free reads) and derived figures."""
        if getattr(self, "_final_stats", None) is not None:
            return self._final_stats
        return collect_stats(self, partial)

    # ---------------------------------------------------------------- close
    def close(self) -> torch.nn.Module | None:
        """Stop every process and release the shared memory (idempotent). Returns the final
        model: a private nn.Module holding the last shared parameters."""
        if self._closed:
            return self.model
        self._closed = True
        try:
            if self.arena is not None:
                self.arena.array("glob")[0]["stop"] = 1
                release_all(None, self.procs, self._sync)
                if self.config.checkpoint and self.t_go:
                    self.write_checkpoint(pause=False)     # quiescent: every process has stopped
                self._final_stats = self.stats()
                model = self._eval_model
                bind_params(model, self.model_params().clone())
                self.model = model
                self._eval_data = ()
        finally:
            if self._finalizer is not None:
                self._finalizer.detach()
            if self.arena is not None:
                self.arena.close()
            if self._log:
                self._log.close()
            release_all(None, self.procs, {})   # no-op unless the try block failed early
        return self.model

    def __enter__(self) -> "Engine":
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
