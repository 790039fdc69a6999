"""The learner processes: one module-level entry point, one loop per protocol.

``direct`` (Hogwild): read the shared parameters (a private snapshot by default, or in place),
compute a gradient, apply the rule to the shared parameters and state without any lock. The
global version is the sum of the per-worker update counters; the staleness of a gradient is the
version when it is applied minus the version when its parameters were read.

``server`` (client side): compute a gradient on a consistent snapshot (seqlock against the
server's writes), push it into one of the learner's gradient slots, then do what the server
variant says (strategies.server.WorkerMode): wait to be released, go on with the same
parameters, or pull the current ones. A learner of a synchronous variant abandons a gradient
whose version has been overtaken (it is cancelled: counted, never pushed).
"""
from __future__ import annotations

import math
import os
import time
import traceback

import torch

from ..rules.consensus import sq_distance
from ..strategies.server import KAggregator, WorkerMode
from .context import Context, ProcessArgs, Stopped
from .control import DONE, FAILED, RUNNING, record_applied, record_loss
from .flat import bind_grads, bind_params
from .layout import GRAD_SLOTS


def process_main(args: ProcessArgs, go, push_sem, release_sems, errors) -> None:
    """Entry point of every engine process (rank P is the server)."""
    ctx = None
    try:
        ctx = Context(args)
        if ctx.rank == ctx.plan.workers:
            from .server import serve
            loop = serve
        elif ctx.plan.protocol == "replicas":
            from .replicas import replica_loop
            loop = replica_loop
        else:
            loop = direct_loop if ctx.plan.protocol == "direct" else client_loop
        loop(ctx, go, push_sem, release_sems)
    except Stopped:
        pass
    except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, then exit 1
        if ctx is not None:
            ctx.slot["status"] = FAILED
        try:
            errors.put((args.rank, os.getpid(), f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        finally:
            os._exit(1)
    if ctx is not None:
        ctx.slot["status"] = DONE


class NonFiniteError(ArithmeticError):
    """A NaN/Inf loss or gradient under on_nonfinite="stop"."""


def _start(ctx: Context, go) -> None:
    ctx.ready()
    ctx.wait(go)
    ctx.slot["status"] = RUNNING


def _gradient(ctx: Context, model: torch.nn.Module, g: torch.Tensor) -> float | None:
    """One mini-batch: zero the flat gradient, forward, backward. None if loss/grad not finite."""
    g.zero_()
    loss = ctx.loss_fn(model, ctx.sample())
    loss.backward()
    value = float(loss.detach())
    ctx.slot["grads"] += 1
    ctx.slot["samples"] += ctx.plan.batch_size
    record_loss(ctx.slot, value)
    # one reduction instead of an n-element mask: a NaN or Inf anywhere makes the sum non-finite
    if ctx.plan.config.check_finite and not (math.isfinite(value) and math.isfinite(float(g.sum()))):
        ctx.slot["nonfinite"] += 1
        if ctx.plan.config.on_nonfinite == "stop":
            raise NonFiniteError(f"non-finite loss ({value}) or gradient at this worker's mini-batch "
                                 f"{int(ctx.slot['grads'])} (--on-nonfinite stop)")
        return None
    return value


def _timed(slot, t_begin: float, delay: float) -> None:
    """Book one mini-batch's time outside the injected delay (the theory's compute term)."""
    slot["compute_s"] += time.perf_counter() - t_begin - delay
    slot["timed"] += 1


def direct_loop(ctx: Context, go, push_sem, release_sems) -> None:
    plan, slot, ctrl = ctx.plan, ctx.slot, ctx.ctrl
    P, steps, bound, policy = plan.workers, plan.steps, plan.config.max_staleness, plan.lr_policy
    model = ctx.model_fn()
    snapshot = plan.config.read == "snapshot"
    view = ctx.arena.tensor("snap")[ctx.rank] if snapshot else ctx.x
    bind_params(model, view)
    g = torch.zeros_like(ctx.x)
    bind_grads(model, g)
    updates = ctrl["updates"][:P]
    _start(ctx, go)
    while True:
        ctx.check()
        t_begin = time.perf_counter()
        v_read = int(updates.sum())
        slot["version_read"] = v_read
        if snapshot:
            view.copy_(ctx.x)
        if _gradient(ctx, model, g) is None:
            continue
        if (d := ctx.delay.next()) > 0:
            ctx.sleep(d)
        _timed(slot, t_begin, d)
        v_now = int(updates.sum())
        if steps is not None and v_now >= steps:
            raise Stopped
        tau = v_now - v_read
        if bound is not None and tau > bound:
            slot["dropped"] += 1
            continue
        lr = policy(plan.lr, tau, sq_distance(ctx.x, view) if policy.needs_distance else None)
        plan.rule.update(ctx.x, g, ctx.state, step=v_now + 1, lr=lr)
        record_applied(slot, tau, lr)
        slot["updates"] += 1


def read_consistent(ctx: Context, dst: torch.Tensor) -> int:
    """Copy the shared parameters into ``dst`` under the server's seqlock; return their version."""
    glob = ctx.glob
    while True:
        seq = int(glob["seq"])
        if seq & 1:
            time.sleep(0)
            continue
        dst.copy_(ctx.x)
        version = int(glob["version"])
        if int(glob["seq"]) == seq:
            return version


def _drain(sem) -> bool:
    got = False
    while sem.acquire(False):
        got = True
    return got


def client_loop(ctx: Context, go, push_sem, release_sems) -> None:
    plan, slot, rank = ctx.plan, ctx.slot, ctx.rank
    agg = KAggregator(plan.variant, plan.workers, plan.k)
    mode, cancellable = agg.mode, agg.synchronous
    release = release_sems[rank]
    model = ctx.model_fn()
    snap = ctx.arena.tensor("snap")[rank]
    bind_params(model, snap)
    g = torch.zeros_like(ctx.x)
    bind_grads(model, g)
    slots = ctx.arena.tensor("grad_slots")[rank]
    slot_version = ctx.arena.array("slot_version")[rank]
    consumed = ctx.arena.array("consumed")[rank]
    wread = ctx.arena.tensor("wread")[rank] if "wread" in ctx.arena.layout else None
    pushed = int(slot["pushed"])                  # a restarted learner continues the count
    _start(ctx, go)
    _drain(release)                               # releases meant for a predecessor
    t_begin = time.perf_counter()
    version = read_consistent(ctx, snap)
    while True:
        ctx.check()
        slot["version_read"] = version
        if _gradient(ctx, model, g) is None:
            continue
        d = ctx.delay.next()
        if cancellable:
            # an update overtook this gradient (during compute or the injected delay, which the
            # release cuts short): cancelled, restart on the new parameters
            if (d > 0 and ctx.wait(release, timeout=d)) or _drain(release):
                _drain(release)
                slot["cancelled"] += 1
                t_begin = time.perf_counter()
                version = read_consistent(ctx, snap)
                continue
        elif d > 0:
            ctx.sleep(d)
        _timed(slot, t_begin, d)                     # waiting for a free slot is not compute
        while pushed - consumed[0] >= GRAD_SLOTS:   # both slots still queued at the server
            ctx.check()
            time.sleep(0.0002)
        s = pushed % GRAD_SLOTS
        slots[s].copy_(g)
        if wread is not None:
            wread[s].copy_(snap)
        slot_version[s] = version
        pushed += 1
        slot["pushed"] = pushed
        push_sem.release()
        if mode is WorkerMode.WAIT:
            ctx.wait(release)
            _drain(release)
        t_begin = time.perf_counter()
        if mode is not WorkerMode.SAME or _drain(release):
            version = read_consistent(ctx, snap)
