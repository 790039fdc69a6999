"""The supervisor's evaluations: the curve's samples, measured off the supervisor's loop.

An evaluation takes its view of the parameters in the supervisor (lock-free in place on the host;
copied while quiesced from a device arena), then runs the forward passes in a background thread,
so the supervisor keeps watching the processes, the step and time limits and the checkpoints
while it runs: a run stops on time whatever the evaluation set's size. The sample is recorded in
the supervisor when the thread is done (adaptive K, targets, the log and ``on_sample`` all see it
there), stamped with the time its parameters were read.

Budget: evaluations take at most ``EVAL_SHARE`` of one core: one that took E seconds is followed
by the next ``E / EVAL_SHARE`` after its start at the soonest; otherwise evaluations keep to
the grid of ``eval_interval`` from the go (so two runs' curves are sampled at the same
times). The first sample (before the go) and the last (after the stop) are measured in the
supervisor's own thread.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from .model_view import the_model
from .record import Sample

EVAL_SHARE = 0.5


def next_due(due: float, started: float, seconds: float, interval: float) -> float:
    """When the evaluation after one due at ``due``, started at ``started`` and ``seconds`` long,
    is due: on the grid (``due + interval``) unless that leaves it more than ``EVAL_SHARE`` of a
    core, then ``seconds / EVAL_SHARE`` after this one's start."""
    return max(due + interval, started + seconds / EVAL_SHARE)


class EvalJob:
    """One call of ``fn`` in a daemon thread; :meth:`get` returns its result or raises its error."""

    def __init__(self, fn, meta: tuple) -> None:
        self.meta, self._fn = meta, fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="shmopt-eval", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # noqa: BLE001  (raised again in the supervisor's thread)
            self.error = exc
        finally:
            self.seconds = time.monotonic() - self.started

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()

    def get(self) -> Any:
        self.wait()
        if self.error is not None:
            raise self.error
        return self.result


class Evaluations:
    """The engine's evaluations (see the module docstring); ``engine`` is the supervisor's
    :class:`~shmopt.engine.supervisor.Engine`, ``log`` an open file or None."""

    def __init__(self, engine: Any, log=None) -> None:
        self.eng, self.log = engine, log
        self.job: EvalJob | None = None
        self.next_at = 0.0

    def now(self, t: float | None = None) -> Sample:
        """Evaluate in this thread (after any evaluation in flight); stamped ``t`` or now."""
        self.drain()
        started = time.monotonic()
        meta, views = self._read(t)
        return self._record(meta, self._measure(views), started, 0.0)

    def go(self) -> None:
        """The workers start now: the grid of evaluations starts here."""
        self.next_at = time.monotonic() + self.eng.plan.supervisor.eval_interval

    def poll(self) -> Sample | None:
        """Start an evaluation when one is due; the sample of one that has finished, else None."""
        if self.job is not None and self.job.done():
            return self.drain()
        if self.job is None and time.monotonic() >= self.next_at:
            meta, views = self._read(None)
            self.job = EvalJob(lambda: self._measure(views), meta)
        return None

    def drain(self) -> Sample | None:
        """Wait for the evaluation in flight, if any, and record its sample."""
        if self.job is None:
            return None
        job, self.job = self.job, None
        return self._record(job.meta, job.get(), job.started, job.seconds)

    def abandon(self) -> None:
        """Wait for the evaluation in flight, dropping its result (the engine is closing)."""
        if self.job is not None:
            self.job.wait()
            self.job = None

    def _read(self, t: float | None) -> tuple[tuple, tuple]:
        eng = self.eng
        t = time.time() if t is None else t
        leader = eng.leader()
        eng.record.track_leader(leader)
        device = eng.arena.device.type != "cpu"    # copied out while quiesced; the host reads in place
        with eng._quiesced():                      # host: a lock-free read, as every worker's
            x, mb = (v.to("cpu", copy=device) if v is not None else None
                     for v in the_model(eng.plan, eng.buffers, leader))
            X = eng.buffers.x.to("cpu", copy=device) if eng.plan.replicas is not None else None
            XB = eng.buffers.mbuf.to("cpu", copy=device) if X is not None and mb is not None else None
        return (t, leader, eng.stats(partial=True)), (x, mb, X, XB)

    def _measure(self, views: tuple) -> tuple:
        x, mb, X, XB = views
        ev = self.eng.evaluator
        loss, metrics = ev.evaluate(x, mb)
        if X is None:
            return loss, metrics, None, None
        average = ev.loss(X.mean(0), XB.mean(0) if XB is not None else None)
        replicas = [ev.loss(X[r], XB[r] if XB is not None else None) for r in range(X.shape[0])]
        return loss, metrics, average, replicas

    def _record(self, meta: tuple, measured: tuple, started: float, seconds: float) -> Sample:
        eng = self.eng
        (t, leader, st), (loss, metrics, average, replicas) = meta, measured
        s = Sample(round(max(t - eng.record.t_go, 0.0), 4), st["updates"], loss, st["samples_per_s"],
                   st["staleness_mean"], st["gradients"], st["dropped"], leader)
        s.metrics = metrics
        if eng.plan.server is not None:        # the K from here on (adaptive: decided on this loss)
            s.k = eng.buffers.glob["k"] = eng.record.next_k(s, eng.plan.k, not eng.buffers.glob["stop"])
        if eng.plan.nodes is not None:
            s.exchanges, s.comm_share = st["exchanges"], st["comm_share"]
            s.bytes_per_update, s.node_staleness_mean = st["bytes_per_update"], st["node_staleness_mean"]
        if average is not None:
            s.loss_average, s.loss_replicas = average, replicas
        eng.record.history.append(s)
        self.next_at = next_due(self.next_at or started, started, seconds, eng.plan.supervisor.eval_interval)
        if self.log:
            self.log.write(json.dumps(s.to_dict()) + "\n")
            self.log.flush()
        if eng.on_sample:
            eng.on_sample(s)
        return s
