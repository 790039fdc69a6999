"""Time to a target accuracy, measured the same way for shmopt and for PyTorch's mnist_hogwild
pattern: the parameters are copied every EVERY seconds while the run trains and evaluated after
it, on the whole evaluation set, so neither side spends CPU on evaluations while it trains and
both are sampled on the same time grid (#25).

* shmopt: the supervisor's evaluation at ``eval_interval = EVERY`` on 16 rows, through a metric
  that keeps a copy of the model it is given (the evaluation thread's own copy, read lock-free);
* the pattern (bench/baselines.py): the parent copies the shared model on the same grid.

A target is reached at the first copy whose accuracy (or gap to the optimum, for problems with a
known optimum) reaches it.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import baselines
import torch

import shmopt
from shmopt.problems import Problem


class KeepCopies:
    """A problem's ``metrics``: keeps a copy of every model it is given (in the supervisor; the
    workers get an empty one, by pickling)."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def __getstate__(self) -> dict:
        return {"states": []}

    def __call__(self, model: torch.nn.Module, data) -> dict[str, float]:
        self.states.append(_copy(model))
        return {"copies": float(len(self.states))}


def _copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def shmopt_copies(problem: Problem, every: float, **train) -> tuple[list[float], list[dict], dict]:
    """Train with shmopt; the copies' times (s since the go), the copies and the run's stats."""
    keep = KeepCopies()
    tiny = tuple(t[:16] for t in problem.eval_data())
    times: list[float] = []
    r = shmopt.train(dataclasses.replace(problem, metrics=keep, eval=tiny), eval_interval=every,
                     eval_samples=16, on_sample=lambda s: times.append(s.t), **train)
    return times, keep.states[-len(times):], r.stats      # (the first calls probe the metric names)


def pattern_copies(problem: Problem, every: float, seconds: float,
                   processes: int = 2) -> tuple[list[float], list[dict], dict]:
    """The mnist_hogwild pattern for ``seconds``; the copies' times, the copies, its stats."""
    times: list[float] = []
    states: list[dict] = []

    def during(procs, model):
        t0 = time.perf_counter()
        while (t := time.perf_counter() - t0) < seconds - every:
            times.append(t)
            states.append(_copy(model))
            time.sleep(max(0.0, every - (time.perf_counter() - t0) % every))
    st = baselines.hogwild(problem, processes, seconds, threads=1, during=during)
    return times, states, st


def accuracy_of(problem: Problem) -> Callable[[torch.nn.Module], float]:
    data = problem.eval_data()

    def score(model: torch.nn.Module) -> float:
        return float(problem.metrics(model, data)["accuracy"])
    return score


def gap_of(problem: Problem) -> Callable[[torch.nn.Module], float]:
    """Minus the gap to the optimum in % (higher is better, as an accuracy)."""
    data = problem.train

    def score(model: torch.nn.Module) -> float:
        return -100 * (float(problem.loss(model, data)) / problem.optimum - 1)
    return score


def first_reached(problem: Problem, times: list[float], states: list[dict], targets: tuple[float, ...],
                  score: Callable[[torch.nn.Module], float]) -> dict[float, float | None]:
    """The time of the first copy that reaches each target (None: never); evaluated in order,
    stopping once every target is reached."""
    model = problem.model()
    model.eval()
    found: dict[float, float | None] = dict.fromkeys(targets)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            for t, state in zip(times, states):
                model.load_state_dict(state)
                value = score(model)
                for g in targets:
                    if found[g] is None and value >= g:
                        found[g] = t
                if all(v is not None for v in found.values()):
                    break
    finally:
        torch.set_num_threads(threads)
    return found
