r"""Expected wall-clock time per update E[T] of the K-variants of distributed SGD.

Dutta, Joshi, Ghosh, Dube, Nagpurkar, "Slow and Stale Gradients Can Win the Race: Error-Runtime
Trade-offs in Distributed SGD", AISTATS 2018 (arXiv 1803.01113), section 4 (runtime analysis).

A parameter server and P learners; every update averages K gradients. A learner's time per
mini-batch is i.i.d. X = compute + D, where compute is a constant and D an injected delay
(:mod:`shmopt.strategies.delays`). The protocols are those of :mod:`shmopt.strategies.server`:

* ``k-sync``: the update happens when K *distinct learners* have finished a mini-batch on the
  current version; the others are cancelled and all P restart on the new version at the update.
* ``k-batch-sync``: a learner that finishes starts another mini-batch on the same version; the
  update happens when K *mini-batches* (from anyone) are done; then all are cancelled and restart.
* ``k-async``: the update happens when K distinct learners have pushed (a pusher waits); only the
  K pushers restart at the update; unfinished learners keep computing and count toward later
  updates (their gradients are stale).
* ``k-batch-async``: every finished mini-batch is pushed and its learner goes on at once; the
  update happens each time K new mini-batches have arrived.
* ``sync`` = k-sync with K = P; ``async`` = k-async with K = 1 (= k-batch-async with K = 1).

Closed forms, with H_n = Σ_{i≤n} 1/i, X ~ Exp(μ) (``exp`` delay, compute 0) or X ~ Δ + Exp(μ)
(``shifted-exp`` delay, or any exponential delay with compute > 0; Δ = compute + SHIFT):

=============  ======================  ============================================
variant        X ~ Exp(μ)              X ~ Δ + Exp(μ)
=============  ======================  ============================================
sync           H_P/μ                   Δ + H_P/μ
k-sync         (H_P − H_{P−K})/μ       Δ + (H_P − H_{P−K})/μ
k-batch-sync   K/(Pμ)                  no closed form (simulated); K = 1: as k-sync
k-async        (H_P − H_{P−K})/μ       no closed form (simulated); K = P: sync; K = 1: async
k-batch-async  K/(Pμ)                  K(Δ + 1/μ)/P (long run)
async          1/(Pμ)                  (Δ + 1/μ)/P
=============  ======================  ============================================

The exponential k-sync value is E[X_{K:P}], the K-th order statistic of P exponentials (the gaps
between order statistics are Exp((P−i)μ)); k-batch-sync and k-async reach the same by
memorylessness (after each update all P learners are busy with fresh exponential clocks, so the
next K finishes form a Poisson process of rate Pμ, or the K smallest of P). The k-batch-async /
async values are the renewal-reward theorem: P independent renewal processes of mean E[X] deliver
P/E[X] mini-batches per second; they hold for every X with finite mean.

Two further closed forms follow from the same arguments and are used too:

* constant X (``none`` delay, X = compute): sync, k-sync, k-batch-sync: X (all P finish together,
  K ≤ P batches arrive at once); k-batch-async: K·X/P; k-async: X / floor(P/K) (all P learners
  finish together every X; ⌊P/K⌋ updates are formed, the P mod K left-over pushers wait and are
  released with the next round; async: X/P).
* Pareto type I delays (x_min = s, index α), X = c + s·U^{−1/α}: k-sync (and sync, k-async with
  K = P, k-batch-sync with K = 1) E[T] = c + E[X_{K:P}] with
  E[X_{K:P}] = s·Γ(a − 1/α)·Γ(P + 1) / (Γ(a)·Γ(P + 1 − 1/α)), a = P − K + 1
  (U_{(a)} ~ Beta(a, K));
  infinite when a·α ≤ 1. k-batch-async and async: the renewal value K·E[X]/P (∞ for α ≤ 1).

Everything else (k-batch-sync and k-async with shifted exponential or Pareto delays, ...) is
estimated by :func:`simulate`, a seeded discrete-event simulation of exactly the protocols above:
synchronous variants are i.i.d. rounds (vectorised order statistics, standard error of the mean);
asynchronous variants run from all learners starting at time 0, discard a warm-up of 500 updates
and report E[T] = elapsed time / updates with a batch-means standard error.

Pure module: imports only ``math``, ``heapq``, ``dataclasses`` and ``numpy``.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..checks import integer, number
from ..errors import ConfigError
from .delays import Delay, parse_delay

#: Accepted variant names ("sync" = k-sync with K = P, "async" = k-async with K = 1).
VARIANTS: tuple[str, ...] = ("sync", "async", "k-sync", "k-batch-sync", "k-async", "k-batch-async")

#: Updates discarded at the start of an asynchronous simulation (all learners start together).
WARMUP_UPDATES = 500

_BATCHES = 50           # batch-means batches for the standard error of asynchronous runs
_CHUNK_VALUES = 2_000_000   # numbers drawn per vectorised chunk (bounds memory)


def harmonic(n: int) -> float:
    """H_n = Σ_{i=1..n} 1/i (H_0 = 0)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"harmonic(n) needs an integer n >= 0, got {n!r}")
    return math.fsum(1.0 / i for i in range(1, int(n) + 1))


@dataclass(frozen=True)
class TheoryResult:
    """E[T] of one variant: the value, how it was obtained and the formula used."""

    variant: str
    workers: int
    k: int                          # effective K (P for "sync", 1 for "async")
    delay: str                      # delay spec
    expected_iteration_time_s: float
    method: str                     # "closed-form" or "simulation"
    formula: str
    stderr: float | None = None     # simulation only
    compute: float = 0.0            # constant compute time per mini-batch (s)
    iterations: int | None = None   # measured updates (simulation only)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------------- validation
def _protocol(variant: str, workers: int, k: int | None) -> tuple[str, int]:
    """Map a variant to (server protocol, K) after validating it."""
    if variant == "sync":
        return "k-sync", workers
    if variant == "async":
        return "k-async", 1
    return variant, integer("k", k, 1, workers)


def _validate(variant: str, workers: int, k: int | None, delay: Delay | str, compute: float,
              iterations: int = 1, seed: int = 0) -> tuple[str, int, Delay, float]:
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    workers = integer("workers", workers, 1)
    compute = number("compute", compute, ge=0)
    integer("iterations", iterations, 1)
    integer("seed", seed, 0)
    proto, kk = _protocol(variant, workers, k)
    return proto, kk, parse_delay(delay), compute


# --------------------------------------------------------------------------------- closed forms
def _pareto_order_stat(p: int, k: int, scale: float, alpha: float) -> float:
    """E of the K-th smallest of P i.i.d. Pareto(scale, alpha) (∞ when it does not exist)."""
    a, t = p - k + 1, 1.0 / alpha
    if a - t <= 0:
        return math.inf
    return scale * math.exp(math.lgamma(a - t) + math.lgamma(p + 1) - math.lgamma(a)
                            - math.lgamma(p + 1 - t))


def closed_form(variant: str, workers: int, k: int | None, delay: Delay | str,
                compute: float = 0.0) -> tuple[float, str] | None:
    """``(E[T], formula)`` when a closed form exists for this case, else None."""
    proto, kk, d, c = _validate(variant, workers, k, delay, compute)
    p = int(workers)
    if proto == "k-async" and kk == p:          # every learner pushes, all restart: fully sync
        proto = "k-sync"
    if proto == "k-batch-sync" and kk == 1:     # the first finished batch triggers the update
        proto = "k-sync"
    if proto == "k-async" and kk == 1:          # each push is an update, the pusher goes on
        proto = "k-batch-async"
    sync_name = kk == p

    if d.kind == "none":
        x = c
        if proto == "k-sync" or proto == "k-batch-sync":
            return x, "X"
        if proto == "k-async":
            return x / (p // kk), "X/floor(P/K)"
        return kk * x / p, ("X/P" if kk == 1 else "K*X/P")

    if d.kind in ("exp", "shifted-exp"):
        mu = 1.0 / d.exp_mean  # type: ignore[operator]
        delta = c + d.shift
        pure = delta == 0.0
        pre = "" if pure else "Delta + "
        if proto == "k-sync" or (pure and proto == "k-async"):
            value = delta + (harmonic(p) - harmonic(p - kk)) / mu
            return value, pre + ("H_P/mu" if sync_name else "(H_P - H_{P-K})/mu")
        if proto == "k-batch-sync":
            return (kk / (p * mu), "K/(P*mu)") if pure else None
        if proto == "k-batch-async":
            value = kk * (delta + 1.0 / mu) / p
            if pure:
                return value, "1/(P*mu)" if kk == 1 else "K/(P*mu)"
            return value, "(Delta + 1/mu)/P" if kk == 1 else "K*(Delta + 1/mu)/P"
        return None

    # pareto
    scale, alpha = d.params
    if proto == "k-sync":
        value = c + _pareto_order_stat(p, kk, scale, alpha)
        return value, ("c + E[X_{K:P}] = c + s*G(P-K+1-1/alpha)*G(P+1)/(G(P-K+1)*G(P+1-1/alpha)) "
                       "(Pareto order statistic)")
    if proto == "k-batch-async":
        return kk * (c + d.mean) / p, "K*(c + s*alpha/(alpha-1))/P (renewal)"
    return None


# --------------------------------------------------------------------------------- simulation
def _draws(d: Delay, c: float, shape: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    x = d.sample(shape, rng)
    return x + c if c else x


def _iid_stats(t: np.ndarray) -> tuple[float, float]:
    n = t.size
    mean = float(t.mean())
    return mean, (float(t.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0)


def _sim_k_sync(p: int, k: int, d: Delay, c: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per round: all P start together; T = K-th smallest X."""
    out = np.empty(n)
    rows = max(1, _CHUNK_VALUES // p)
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        x = _draws(d, c, (hi - lo, p), rng)
        out[lo:hi] = np.partition(x, k - 1, axis=1)[:, k - 1]
    return out


def _sim_k_batch_sync(p: int, k: int, d: Delay, c: float, n: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Per round: every learner runs batches back to back from 0; T = K-th smallest finish time.

    A learner can contribute at most K batches. We first look at m = ceil(K/P) + 4 batches per
    learner; a round whose result could still change (some learner's m-th batch ends before it)
    is redone with all K batches per learner, so the result is exact.
    """
    m = min(k, -(-k // p) + 4)
    out = np.empty(n)
    rows = max(1, _CHUNK_VALUES // (p * m))
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        r = hi - lo
        ends = np.cumsum(_draws(d, c, (r, p, m), rng), axis=2)
        t = np.partition(ends.reshape(r, p * m), k - 1, axis=1)[:, k - 1]
        if m < k:
            redo = np.flatnonzero((ends[:, :, -1] < t[:, None]).any(axis=1))
            if redo.size:
                extra = np.cumsum(_draws(d, c, (redo.size, p, k - m), rng), axis=2)
                full = np.concatenate([ends[redo], ends[redo][:, :, -1:] + extra], axis=2)
                t[redo] = np.partition(full.reshape(redo.size, p * k), k - 1, axis=1)[:, k - 1]
        out[lo:hi] = t
    return out


def _sim_k_async(p: int, k: int, d: Delay, c: float, total: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Update times of K-async. Learners are exchangeable, so the state is the multiset of the
    busy learners' finish times (a heap): the next update is at the K-th smallest finish time u;
    those K learners (waiting since their push) restart at u with fresh draws; the others go on."""
    heap = _draws(d, c, p, rng).tolist()
    heapq.heapify(heap)
    pop, push, replace = heapq.heappop, heapq.heappush, heapq.heapreplace
    times: list[float] = []
    append = times.append
    per_chunk = max(1, _CHUNK_VALUES // (4 * k))
    done = 0
    while done < total:
        todo = min(per_chunk, total - done)
        xs = _draws(d, c, todo * k, rng).tolist()
        i = 0
        for _ in range(todo):
            for _ in range(k - 1):
                pop(heap)
            u = heap[0]
            replace(heap, u + xs[i])
            i += 1
            for _ in range(k - 1):
                push(heap, u + xs[i])
                i += 1
            append(u)
        done += todo
    return np.asarray(times)


def _sim_k_batch_async(p: int, k: int, d: Delay, c: float, total: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Update times of K-batch-async. Nobody idles, so each learner is an independent renewal
    process; the j-th update is the (jK)-th arrival of their superposition."""
    need = total * k
    ends = np.cumsum(_draws(d, c, (p, need // p + 16), rng), axis=1)
    for _ in range(64):
        horizon = float(ends[:, -1].min())      # every learner's arrivals before it are known
        arrivals = ends[ends <= horizon]
        if arrivals.size >= need:
            arrivals.sort(kind="stable")
            return arrivals[k - 1:need:k]
        more = int(1.25 * (need - arrivals.size) / p) + 16
        ext = ends[:, -1:] + np.cumsum(_draws(d, c, (p, more), rng), axis=1)
        ends = np.concatenate([ends, ext], axis=1)
    raise RuntimeError("k-batch-async simulation did not reach the requested number of updates")


def _async_stats(times: np.ndarray, warmup: int) -> tuple[float, float]:
    start = float(times[warmup - 1]) if warmup > 0 else 0.0
    gaps = np.diff(np.concatenate([[start], times[warmup:]]))
    n = gaps.size
    mean = (float(times[-1]) - start) / n
    nb = min(_BATCHES, n // 20)
    if nb < 2:
        return mean, (float(gaps.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0)
    size = n // nb
    means = gaps[: nb * size].reshape(nb, size).mean(axis=1)
    return mean, float(means.std(ddof=1)) / math.sqrt(nb)


def simulate(variant: str, workers: int, k: int | None, delay: Delay | str, compute: float = 0.0,
             iterations: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """Seeded discrete-event simulation of one variant: ``(E[T] estimate, standard error)``.

    ``iterations`` updates are measured (plus :data:`WARMUP_UPDATES` discarded ones for the
    asynchronous variants). The learners draw X = compute + delay i.i.d. per mini-batch from
    ``numpy.random.Generator(PCG64(seed))``.
    """
    proto, kk, d, c = _validate(variant, workers, k, delay, compute, iterations, seed)
    p, n = int(workers), int(iterations)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    if proto == "k-sync":
        return _iid_stats(_sim_k_sync(p, kk, d, c, n, rng))
    if proto == "k-batch-sync":
        return _iid_stats(_sim_k_batch_sync(p, kk, d, c, n, rng))
    total = n + WARMUP_UPDATES
    if proto == "k-async":
        times = _sim_k_async(p, kk, d, c, total, rng)
    else:
        times = _sim_k_batch_async(p, kk, d, c, total, rng)
    return _async_stats(times, WARMUP_UPDATES)


_simulate = simulate   # expected_iteration_time's keyword argument shadows the name


def expected_iteration_time(variant: str, workers: int, k: int | None, delay: Delay | str, *,
                            compute: float = 0.0, simulate: bool | None = None,
                            iterations: int = 200_000, seed: int = 0) -> TheoryResult:
    """E[T], the expected wall-clock time per update, of ``variant`` with P = ``workers``.

    ``simulate=None`` or ``False``: the closed form when one exists, otherwise the simulation;
    ``simulate=True``: always the simulation. ``k`` is ignored for ``sync`` and ``async``.
    """
    proto, kk, d, c = _validate(variant, workers, k, delay, compute, iterations, seed)
    cf = None if simulate else closed_form(variant, workers, k, d, c)
    common = dict(variant=variant, workers=int(workers), k=kk, delay=d.spec, compute=c)
    if cf is not None:
        value, formula = cf
        return TheoryResult(expected_iteration_time_s=value, method="closed-form", formula=formula,
                            **common)  # type: ignore[arg-type]
    mean, stderr = _simulate(variant, workers, k, d, c, iterations, seed)
    why = "requested" if simulate else f"no closed form for {proto} with this delay"
    return TheoryResult(expected_iteration_time_s=mean, method="simulation",
                        formula=f"discrete-event simulation of {proto} ({why})", stderr=stderr,
                        iterations=int(iterations), **common)  # type: ignore[arg-type]


__all__ = ["VARIANTS", "WARMUP_UPDATES", "TheoryResult", "closed_form", "expected_iteration_time",
           "harmonic", "simulate"]
