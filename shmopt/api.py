"""The Python front end: ``train()`` in one call, or ``Engine`` for start/watch/stop control."""
from __future__ import annotations

from typing import Any, Callable

from .config import Config
from .engine.record import Result, Sample
from .engine.supervisor import Engine
from .errors import ConfigError
from .problems import Problem, load_problem

__all__ = ["train", "make_config", "Result"]


def make_config(**options: Any) -> Config:
    """The Config of ``train()`` keywords: an unknown one is refused, each is checked by its field."""
    return Config.from_dict(options)


def train(problem: Problem | str, *, problem_options: dict[str, Any] | None = None,
          on_sample: Callable[[Sample], None] | None = None, **options: Any) -> Result:
    """Train ``problem`` with shared-memory workers and return the :class:`Result`.

    ``problem`` is a :class:`Problem`, a built-in name (``"logreg"``), a path to a .py file with
    ``problem(**options)`` or ``"module:function"``. ``options`` are :class:`Config` fields, e.g.
    ``train("logreg", algo="apam", workers=2, steps=2000, lr=0.02)``. Everything, the problem
    included, is validated before any process starts (ConfigError); a failing worker raises
    WorkerError; the shared memory is released in every case.

    User code that calls ``train`` must sit under ``if __name__ == "__main__":`` (workers are
    started with spawn/forkserver, which re-import the main module).
    """
    source = None
    if isinstance(problem, str):
        source = problem
        problem = load_problem(problem, **(problem_options or {}))
    elif problem_options:
        raise ConfigError("problem_options apply only when problem is given by name or path")
    config = make_config(**options)
    return Engine(problem, config, source=source, on_sample=on_sample,
                  problem_options=problem_options if source else None).run()
