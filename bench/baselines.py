"""The two baselines shmopt is measured against, written the way their users write them.

* :func:`bare_loop` - the floor: one process, one model, ``torch.optim.Adam(amsgrad=True,
  fused=True)`` (the fused CPU kernel where torch has it), the problem's model, loss and
  mini-batch size. No shared memory, no supervisor, nothing but forward, backward and step.
* :func:`hogwild` - the PyTorch ``mnist_hogwild`` example's pattern: the model is created once,
  ``model.share_memory()`` puts its parameters in shared memory, P processes started with the
  *spawn* context of ``torch.multiprocessing`` (a local context: the global start method is
  left alone) each build their own ``torch.optim.Adam(amsgrad=True)`` (torch's default CPU
  implementation; its m, v, v-hat are private to the process) and train the shared parameters
  without locks.

Both draw mini-batches the way the shmopt workers do (``randint`` row indices, then indexing
the training tensors), so the comparison is the training loop, not the input pipeline. Both
run for a fixed wall-clock time after a start signal and report what they did; the spawn
start-up (importing torch in each child) is not part of the measured time, as shmopt's start-up
is not part of its ``samples_per_s``.
"""
from __future__ import annotations

import cProfile
import json
import os
import queue
import time
from typing import Any

import torch
import torch.multiprocessing as mp

from shmopt.problems import Problem
from shmopt.rules import fused_adam_available

START_TIMEOUT_S = 120.0


def _batch(train: tuple[torch.Tensor, ...], batch_size: int, gen: torch.Generator):
    idx = torch.randint(len(train[0]), (batch_size,), generator=gen)
    return tuple(t[idx] for t in train)


def _lr(problem: Problem) -> float:
    return problem.lr.get("amsgrad", 1e-3)


# --------------------------------------------------------------------------- the bare loop
def bare_loop(problem: Problem, seconds: float, threads: int, seed: int = 0,
              warmup_steps: int = 5, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    """Train ``problem`` in this process for ``seconds``; steps, elapsed time, samples/s.
    ``profiler`` (cProfile) is enabled around the timed loop only."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = problem.model()
        fused = True if fused_adam_available() else None
        optimizer = torch.optim.Adam(model.parameters(), lr=_lr(problem), amsgrad=True, fused=fused)
        train, batch_size = problem.train, problem.batch_size

        def step():
            batch = _batch(train, batch_size, gen)
            optimizer.zero_grad()
            loss = problem.loss(model, batch)
            loss.backward()
            optimizer.step()
            return loss

        for _ in range(warmup_steps):       # first calls allocate the optimizer state
            step()
        steps = 0
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            loss = step()
            steps += 1
        elapsed = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
        return {"processes": 1, "steps": steps, "seconds": elapsed, "batch_size": batch_size,
                "samples_per_s": steps * batch_size / elapsed, "step_s": elapsed / steps,
                "final_batch_loss": float(loss.detach()), "fused": bool(fused)}
    finally:
        torch.set_num_threads(old_threads)


# --------------------------------------------------------------------------- mnist_hogwild
def _hogwild_train(rank, model, loss_fn, train, batch_size, lr, threads, seed, seconds,
                   ready, go, results):
    """One process of the pattern (module-level so that spawn can import it)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed + rank)
    gen = torch.Generator().manual_seed(seed + rank)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True)
    ready.put(rank)
    go.wait()
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = _batch(train, batch_size, gen)
        optimizer.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        steps += 1
    elapsed = time.perf_counter() - t0
    results.put((rank, steps, elapsed, float(loss.detach())))


def hogwild(problem: Problem, processes: int, seconds: float, threads: int,
            seed: int = 0, during=None) -> dict[str, Any]:
    """The mnist_hogwild pattern with ``processes`` spawn processes for ``seconds`` each.
    ``during(procs, model)``, if given, is called once the processes train (to observe them, or
    the shared model); it must return within ``seconds``."""
    ctx = mp.get_context("spawn")
    torch.manual_seed(seed)
    model = problem.model()
    model.share_memory()
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    t_spawn = time.perf_counter()
    try:
        for rank in range(processes):
            p = ctx.Process(target=_hogwild_train,
                            args=(rank, model, problem.loss, problem.train, problem.batch_size,
                                  _lr(problem), threads, seed, seconds, ready, go, results),
                            daemon=True)
            p.start()
            procs.append(p)
        for _ in range(processes):
            _get(ready, procs, START_TIMEOUT_S)
        startup_s = time.perf_counter() - t_spawn
        busy0, t0 = _busy_cpu_s(), time.perf_counter()
        go.set()
        if during is not None:
            during(procs, model)
        out = [_get(results, procs, seconds + START_TIMEOUT_S) for _ in range(processes)]
        busy_cores = (_busy_cpu_s() - busy0) / (time.perf_counter() - t0)
        for p in procs:
            p.join(10.0)
    finally:
        reap(procs, (ready, results))
    check_exits(procs, "hogwild baseline")
    steps = sum(o[1] for o in out)
    rate = sum(o[1] * problem.batch_size / o[2] for o in out)
    return {"processes": processes, "steps": steps, "seconds": max(o[2] for o in out),
            "batch_size": problem.batch_size, "samples_per_s": rate,
            "step_s": processes * problem.batch_size / rate, "startup_s": startup_s,
            "busy_cores": busy_cores,
            "final_batch_loss": max(o[3] for o in out)}


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), for the load check."""
    import psutil
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def reap(procs: list, queues: tuple) -> None:
    """Terminate the processes still alive and close the queues (a baseline's cleanup)."""
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(5.0)
    for q in queues:
        q.close()
        q.join_thread()


def check_exits(procs: list, what: str) -> None:
    """RuntimeError naming the first process of ``what`` that did not exit 0."""
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"{what}: a process exited with {bad[0]}")


def _get(q, procs, timeout: float):
    """``q.get`` that fails early (RuntimeError) when a process died instead of answering."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"hogwild baseline: process {dead[0].pid} exited with "
                                   f"{dead[0].exitcode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"hogwild baseline: no answer within {timeout:.0f} s") from None


# --------------------------------------------------------------------------- profiling a worker
class ProfiledLoss:
    """A problem's loss that profiles the shmopt worker calling it (no engine change needed).

    In the worker of rank ``rank`` (``SHMOPT_RANK``, set by shmopt in its workers; the
    supervisor's evaluations are left alone), cProfile is enabled at the ``skip``-th call and
    stopped ``steps`` calls later: everything the worker's loop does between those calls is
    profiled. The stats go to ``path`` (pstats) and the wall time to ``path + ".json"``.
    """

    def __init__(self, loss, path: str, skip: int = 50, steps: int = 1000, rank: int = 0) -> None:
        self.loss, self.path, self.skip, self.steps, self.rank = loss, path, skip, steps, str(rank)
        self.calls = 0
        self._prof: cProfile.Profile | None = None
        self._t0 = 0.0

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_prof"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _prof=None)

    def __call__(self, model, batch):
        if os.environ.get("SHMOPT_RANK") == self.rank:
            self.calls += 1
            if self.calls == self.skip:
                self._prof = cProfile.Profile()
                self._t0 = time.perf_counter()
                self._prof.enable()
            elif self.calls == self.skip + self.steps and self._prof is not None:
                self._prof.disable()
                wall = time.perf_counter() - self._t0
                self._prof.dump_stats(self.path)
                with open(self.path + ".json", "w", encoding="utf-8") as f:
                    json.dump({"wall_s": wall, "steps": self.steps}, f)
                self._prof = None
        return self.loss(model, batch)


#: (category, how): "cum" = cumulative time of (file suffix, function), "self" = own time of a
#: C function (its name as cProfile shows it). A function that does not occur counts 0.
PROFILE_CATEGORIES = [
    ("forward", "cum", ("torch/nn/modules/module.py", "_wrapped_call_impl")),
    ("forward", "self", "<built-in method torch._C._nn.cross_entropy_loss>"),
    ("backward", "cum", ("torch/_tensor.py", "backward")),
    ("optimizer step", "cum", ("shmopt/rules/adam.py", "update")),
    ("optimizer step", "cum", ("torch/optim/adam.py", "step")),
    ("zero the gradient", "self", "<method 'zero_' of 'torch._C.TensorBase' objects>"),
    ("zero the gradient", "cum", ("torch/optim/optimizer.py", "zero_grad")),
    ("finiteness check", "self", "<built-in method torch.isfinite>"),
    ("finiteness check", "self", "<method 'all' of 'torch._C.TensorBase' objects>"),
    ("finiteness check", "self", "<method 'sum' of 'torch._C.TensorBase' objects>"),
    ("snapshot copy", "self", "<method 'copy_' of 'torch._C.TensorBase' objects>"),
    ("sampling", "cum", ("shmopt/engine/context.py", "sample")),
    ("sampling", "cum", ("baselines.py", "_batch")),
]


def profile_breakdown(stats, wall_s: float, steps: int) -> dict[str, float]:
    """Milliseconds per step by category (PROFILE_CATEGORIES); "other" is the rest of the wall
    time (the loop's own Python code, counters, bookkeeping, profiler overhead)."""
    out: dict[str, float] = {}
    for category, how, key in PROFILE_CATEGORIES:
        t = 0.0
        for (filename, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
            if how == "self" and func == key:
                t += tt
            elif how == "cum" and func == key[1] and filename.replace(os.sep, "/").endswith(key[0]):
                t += ct
        out[category] = out.get(category, 0.0) + t * 1e3 / steps
    out["total"] = wall_s * 1e3 / steps
    out["other"] = out["total"] - sum(v for k, v in out.items() if k != "total")
    return out
