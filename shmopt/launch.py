"""``shmopt.launch``: your own training loop in N processes, under the engine's care.

``launch(fn, workers=N, model=m, optimizer=opt, args=(...))`` shares ``m`` (``shmopt.share``) and
starts N processes (forkserver with torch preloaded, as the engine's, or ``start_method="spawn"``;
not daemonic: a loop may start a DataLoader's workers) that each call
``fn(rank, model, optimizer, *args)`` with the shared model and the shared optimizer (a
``SharedAdam``/``SharedSGD``/... built on the shared model's parameters). The supervisor:

* names a process that raised (with its traceback) or died (its signal) within ``POLL_S`` and
  raises :class:`~shmopt.errors.WorkerError`, after stopping the others;
* on Ctrl-C or any error stops every process (SIGTERM, then SIGKILL after a second: a user's loop
  has no stop flag to check) and removes its shared memory: nothing outlives the call; a process
  whose supervisor dies ends itself within 0.1 s;
* describes the run in a control block that ``shmopt top`` reads (pid, status, heartbeat,
  updates applied through the shared optimizer, per process);
* writes a checkpoint (model and optimizer ``state_dict``, step count, time) every
  ``checkpoint_every`` seconds and at the end, atomically; ``resume=`` loads one. The model and the
  optimizer state are read while the loops run, lock-free: a checkpoint is as consistent as any
  Hogwild read, and training never pauses for it.
"""
from __future__ import annotations

import multiprocessing.connection as mpc
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import checks
from .engine.checkpoint import write_atomic
from .engine.control import DONE, specs
from .engine.entry import read_report
from .engine.group import signal_name, start_context
from .engine.run_view import FORMAT, KIND
from .errors import ConfigError, WorkerError
from .launch_worker import LaunchArgs, launched_main
from .memory import Arena, Layout, sweep_stale_segments, sweep_stale_semaphores
from .shared import SharedModel, share
from .shared.optimizer_base import SharedOptimizer

__all__ = ["launch", "Launched"]

POLL_S = 0.05
CHECKPOINT_FORMAT = "shmopt-launch-checkpoint"


@dataclass
class Launched:
    """What :func:`launch` returns: the shared model (trained), the optimizer, and the run's figures."""

    model: SharedModel | None
    optimizer: SharedOptimizer | None
    stats: dict[str, Any] = field(default_factory=dict)


def _check(fn: Callable, workers: object, model: object, optimizer: object, checkpoint: str | None,
           checkpoint_every: float | None, resume: str | None) -> int:
    workers = checks.integer("workers", workers, 1)
    if not callable(fn):
        raise ConfigError(f"fn must be a function fn(rank, model, optimizer, *args), got {type(fn).__name__}")
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise ConfigError(f"fn {getattr(fn, '__qualname__', fn)!s} cannot be sent to a process "
                          f"({type(exc).__name__}); define it at module level (not a lambda or a "
                          f"nested function)") from None
    if model is None and optimizer is None:    # processes that share nothing through launch (actors)
        pass
    elif not isinstance(model, (torch.nn.Module, SharedModel)):
        raise ConfigError(f"model must be a torch.nn.Module or a shmopt.SharedModel, got "
                          f"{type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, SharedOptimizer):
        raise ConfigError(f"optimizer must be a shmopt shared optimizer (SharedAdam, SharedSGD, ...) built "
                          f"on the shared model's parameters, or None; got {type(optimizer).__name__}")
    checks.output_path("checkpoint", checkpoint)
    if checkpoint_every is not None:
        checks.number("checkpoint_every", checkpoint_every, gt=0.0)
        if checkpoint is None:
            raise ConfigError("checkpoint_every needs a checkpoint path")
    if resume is not None and not os.path.isfile(resume):
        raise checks.invalid("resume", resume, "no such checkpoint file")
    return workers


def _describe(fn: Callable, workers: int, optimizer: SharedOptimizer | None) -> dict[str, Any]:
    """The control block's description, as ``shmopt top`` reads it."""
    return {"kind": KIND, "format": FORMAT, "pid": os.getpid(), "created": time.time(),
            "problem": getattr(fn, "__qualname__", "fn"), "source": getattr(fn, "__module__", None),
            "algo": "launch", "rule": type(optimizer).__name__ if optimizer is not None else "-",
            "protocol": "direct", "variant": None, "k": None, "workers": workers, "processes": workers,
            "last_role": None, "device": "cpu", "steps": None, "time_limit": None, "window": None,
            "node_rank": None, "nodes": None, "tables": []}


def _save(path: str, model: SharedModel | None, optimizer: SharedOptimizer | None, workers: int,
          t0: float) -> None:
    write_atomic(path, {"format": CHECKPOINT_FORMAT, "version": 1,
                        "model": model.state_dict() if model is not None else None,
                        "optimizer": optimizer.state_dict() if optimizer is not None else None,
                        "steps": optimizer.step_count if optimizer is not None else None,
                        "workers": workers, "wall_s": time.time() - t0})


def _resume(path: str, model: SharedModel | None, optimizer: SharedOptimizer | None) -> None:
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"checkpoint {path!r} is corrupt or truncated ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path!r} is not a checkpoint of shmopt.launch")
    try:
        if model is not None and doc.get("model") is not None:
            model.load_state_dict(doc["model"])
        if optimizer is not None and doc.get("optimizer") is not None:
            optimizer.load_state_dict(doc["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ConfigError(f"checkpoint {path!r} does not fit this model or optimizer: "
                          f"{' '.join(str(exc).split())[:200]}") from None


def _failure(rank: int, p, report: str) -> WorkerError:
    what, tb, _ = read_report(report)
    if what:
        msg = f"process {rank} (pid {p.pid}) raised {what}"
    elif p.exitcode < 0:
        msg = f"process {rank} (pid {p.pid}) was killed by {signal_name(p.exitcode)}"
    else:
        msg = f"process {rank} (pid {p.pid}) exited with code {p.exitcode}"
    return WorkerError(msg, rank, p.pid, p.exitcode, tb)


def _stop(glob, procs: list) -> None:
    """Stop what still runs: a user's loop checks no stop flag, so it is terminated at once (SIGTERM),
    then killed if it has not exited within a second."""
    glob[0]["stop"] = 1
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 1.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def launch(fn: Callable[..., Any], workers: int, model: torch.nn.Module | SharedModel | None,
           optimizer: SharedOptimizer | None = None, *, args: tuple = (), seed: int = 0,
           threads: int = 1, checkpoint: str | None = None, checkpoint_every: float | None = None,
           resume: str | None = None, start_method: str = "forkserver") -> Launched:
    """Run ``fn(rank, model, optimizer, *args)`` in ``workers`` processes, supervised (module text).

    Bad input raises ConfigError before any process starts; a failed process raises WorkerError
    (``rank``, ``pid``, ``exitcode``, ``traceback``). Call it under ``if __name__ == "__main__":``.
    """
    workers = _check(fn, workers, model, optimizer, checkpoint, checkpoint_every, resume)
    checks.choice("start_method", start_method, ("forkserver", "spawn"))
    shared = model if model is None or isinstance(model, SharedModel) else share(model)
    if resume is not None:
        _resume(resume, shared, optimizer)
    sweep_stale_segments()
    sweep_stale_semaphores()
    control = Arena.create(Layout.build(specs(workers)), "", _describe(fn, workers, optimizer))
    reports = tempfile.mkdtemp(prefix="shmopt-reports-")
    ctx, procs = start_context(start_method), []
    t0 = time.time()
    glob = control.array("glob")
    saved = 0
    try:
        for rank in range(workers):
            a = LaunchArgs(rank, workers, fn, shared, optimizer, tuple(args), seed, threads, control.handle,
                           os.path.join(reports, f"{rank}.json"), os.getpid())
            procs.append(ctx.Process(target=launched_main, args=(a,), name=f"shmopt-launch-{rank}",
                                     daemon=False))
            procs[-1].start()
        glob[0]["t_go"] = time.time()
        next_save = time.time() + checkpoint_every if checkpoint_every else None
        while any(p.exitcode is None for p in procs):
            mpc.wait([p.sentinel for p in procs if p.exitcode is None], timeout=POLL_S)
            for rank, p in enumerate(procs):
                if p.exitcode not in (None, 0):
                    raise _failure(rank, p, os.path.join(reports, f"{rank}.json"))
            if next_save is not None and time.time() >= next_save:
                _save(checkpoint, shared, optimizer, workers, t0)
                saved, next_save = saved + 1, time.time() + checkpoint_every
        if checkpoint is not None:
            _save(checkpoint, shared, optimizer, workers, t0)
            saved += 1
        ctrl = control.array("ctrl")
        stats = {"wall_s": time.time() - t0, "workers": workers, "checkpoints": saved,
                 "steps": optimizer.step_count if optimizer is not None else None,
                 "exitcodes": [p.exitcode for p in procs],
                 "finished": int((ctrl["status"] == DONE).sum())}
        return Launched(shared, optimizer, stats)
    finally:
        _stop(glob, procs)
        control.close(unlink=True)
        shutil.rmtree(reports, ignore_errors=True)
