"""Problems: what the engine trains (model factory, loss, data) and how to load them.

``load_problem(spec, **options)`` accepts a built-in name (see :data:`BUILTIN_PROBLEMS`), a path
to a ``.py`` file defining ``problem(**options)``, or ``"module:function"``.
"""
from __future__ import annotations

from shmopt.problems.base import Problem
from shmopt.problems.loader import import_problem_source, load_problem, parse_options
from shmopt.problems.registry import BUILTIN_PROBLEMS

__all__ = ["Problem", "load_problem", "BUILTIN_PROBLEMS", "import_problem_source", "parse_options"]
