"""Loading problems from a spec string: a built-in name, a ``.py`` file or ``module:function``.

Security note: loading a problem from a ``.py`` file or a ``module:function`` spec *imports and
runs that Python code* in the calling process (and :func:`import_problem_source` runs it again in
every worker process).  Only load problem files you trust.

User files are imported with :func:`importlib.util.spec_from_file_location` under a deterministic
module name derived from the file's resolved path (``shmopt_user_<stem>_<8 hex digits>``) and
registered in :data:`sys.modules` *before* the file runs, so functions and classes defined in it
pickle by reference.  A spawned worker calls :func:`import_problem_source` with the same spec to
register the same module under the same name before it unpickles the problem's model and loss.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

from shmopt.errors import ProblemError
from shmopt.problems.base import Problem, describe_exception
from shmopt.problems.registry import BUILTIN_PROBLEMS

__all__ = ["load_problem", "import_problem_source", "parse_options", "user_module_name"]

#: Name of the function a problem ``.py`` file must define.
FILE_FUNCTION = "problem"


def parse_options(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``["n=512", "l2=1e-4", "name=foo"]`` into ``{"n": 512, "l2": 0.0001, "name": "foo"}``.

    Values are parsed with :func:`ast.literal_eval` when possible (numbers, booleans, None,
    tuples, lists, quoted strings), otherwise kept as the raw string.  A pair without ``=``, an
    empty or non-identifier key, or a key given twice raises :class:`ProblemError`.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        if not isinstance(pair, str) or "=" not in pair:
            raise ProblemError(f"malformed problem option {pair!r}: expected key=value, e.g. n=512")
        key, _, raw = pair.partition("=")
        key = key.strip()
        if not key.isidentifier():
            raise ProblemError(f"malformed problem option {pair!r}: the key must be a Python identifier, "
                               "e.g. n=512")
        if key in options:
            raise ProblemError(f"problem option {key!r} given twice")
        raw = raw.strip()
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = raw
        options[key] = value
    return options


# --------------------------------------------------------------------------- spec resolution
def _choices() -> str:
    return ", ".join(sorted(BUILTIN_PROBLEMS))


def _kind(spec: object) -> str:
    """``"builtin"``, ``"file"`` or ``"module"``; ProblemError for anything else."""
    if not isinstance(spec, str) or not spec.strip():
        raise ProblemError(f"unknown problem {spec!r}: choose a built-in ({_choices()}), "
                           "a .py file or module:function")
    if spec in BUILTIN_PROBLEMS:
        return "builtin"
    if spec.endswith(".py") or os.path.isfile(spec):
        return "file"
    if ":" in spec:
        return "module"
    raise ProblemError(f"unknown problem {spec!r}: choose a built-in ({_choices()}), "
                       "a .py file or module:function")


def user_module_name(path: str | os.PathLike[str]) -> str:
    """The deterministic module name a problem file is imported under.

    ``"shmopt_user_" + <sanitised file stem> + "_" + <first 8 hex digits of the SHA-1 of the
    resolved absolute path>`` - identical in every process that resolves to the same file.
    """
    resolved = Path(path).resolve()
    stem = re.sub(r"\W", "_", resolved.stem) or "file"
    digest = hashlib.sha1(str(resolved).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"shmopt_user_{stem}_{digest}"


def _import_file(spec: str) -> ModuleType:
    """Import (once per process) the problem file ``spec`` under :func:`user_module_name`."""
    path = Path(spec)
    if not path.exists():
        raise ProblemError(f"problem file {spec} does not exist")
    if not path.is_file():
        raise ProblemError(f"problem file {spec} is not a file")
    resolved = path.resolve()
    name = user_module_name(resolved)
    module = sys.modules.get(name)
    if module is not None:
        return module
    mspec = importlib.util.spec_from_file_location(name, resolved)
    if mspec is None or mspec.loader is None:
        raise ProblemError(f"problem file {spec} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(mspec)
    sys.modules[name] = module  # before exec: classes/functions defined there pickle by reference
    try:
        mspec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise ProblemError(f"problem file {spec} raised on import: {describe_exception(exc)}") from exc
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_module(spec: str) -> tuple[ModuleType, str]:
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name:
        raise ProblemError(f"malformed problem spec {spec!r}: expected module:function, "
                           "e.g. shmopt.problems.builtin:quadratic")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise ProblemError(f"problem module {module_name!r} (from {spec!r}) could not be imported: "
                           f"{describe_exception(exc)}") from exc
    return module, func_name


def import_problem_source(spec: str) -> None:
    """Make the module defining problem ``spec`` importable in the current process.

    For a ``.py`` file this imports the file under the same deterministic module name
    :func:`load_problem` uses (and registers it in :data:`sys.modules`), *without* calling its
    ``problem()`` function; for ``module:function`` it imports the module; built-ins need
    nothing beyond :mod:`shmopt.problems.builtin`.  Idempotent.  Call it in a freshly spawned
    worker before unpickling the problem's model factory and loss.

    Security note: this executes the user's file / module code in this process.
    """
    kind = _kind(spec)
    if kind == "file":
        _import_file(spec)
    elif kind == "module":
        _import_module(spec)


def _accepted(fn: Callable[..., Any]) -> tuple[inspect.Signature | None, str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, "(unknown)"
    names = [p.name for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return sig, (", ".join(names) if names else "none")


def _call(label: str, fn: Callable[..., Any], options: dict[str, Any]) -> Problem:
    sig, accepted = _accepted(fn)
    if sig is not None:
        params = sig.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        if not takes_any:
            unknown = [k for k in options
                       if k not in params or params[k].kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                                    inspect.Parameter.KEYWORD_ONLY)]
            if unknown:
                raise ProblemError(f"problem {label} has no option {unknown[0]!r}; "
                                   f"accepted options: {accepted}")
        try:
            sig.bind(**options)
        except TypeError as exc:
            raise ProblemError(f"problem {label} cannot be called with options {sorted(options)}: "
                               f"{describe_exception(exc)}; accepted options: {accepted}") from exc
    try:
        result = fn(**options)
    except ProblemError:
        raise
    except TypeError as exc:
        if sig is None and "unexpected keyword argument" in str(exc):
            raise ProblemError(f"problem {label}: {describe_exception(exc)}") from exc
        raise ProblemError(f"problem {label} raised while building: {describe_exception(exc)}") from exc
    except (Exception, SystemExit) as exc:
        raise ProblemError(f"problem {label} raised while building: {describe_exception(exc)}") from exc
    if not isinstance(result, Problem):
        raise ProblemError(f"problem {label} returned {type(result).__name__}, expected a "
                           "shmopt.problems.Problem")
    return result


def load_problem(spec: str, **options: Any) -> Problem:
    """Build and validate the problem named by ``spec``.

    ``spec`` is one of

    * a built-in name (a key of :data:`BUILTIN_PROBLEMS`: ``logreg``, ``mlp``, ``quadratic``);
    * a path to a Python file (ends with ``.py`` or is an existing file) that defines
      ``problem(**options) -> Problem``;
    * ``"module:function"`` - an importable module and a function in it returning a Problem.

    The function is called with ``**options`` (see :func:`parse_options`); options it does not
    accept raise :class:`ProblemError` listing the accepted ones.  The result is checked with
    :meth:`Problem.validate`.  A file is imported once per process; loading it again reuses the
    module (edits to the file are not picked up until a new process).

    Security note: a file or module spec imports and runs that code in this process.
    """
    kind = _kind(spec)
    if kind == "builtin":
        fn: Any = BUILTIN_PROBLEMS[spec]
        label = repr(spec)
    elif kind == "file":
        module = _import_file(spec)
        fn = getattr(module, FILE_FUNCTION, None)
        if not callable(fn):
            raise ProblemError(f"problem file {spec} has no {FILE_FUNCTION}() function")
        label = f"file {spec}"
    else:
        module, func_name = _import_module(spec)
        fn = getattr(module, func_name, None)
        if not callable(fn):
            raise ProblemError(f"problem module {module.__name__!r} has no function {func_name!r} "
                               f"(from {spec!r})")
        label = repr(spec)
    problem = _call(label, fn, options)
    problem.validate()
    return problem
