"""Option checks shared by every layer: one line per failure, ``invalid NAME=VALUE: must be ...``.

Each check takes the option's name as the user spells it (``time-limit`` for the CLI's
``--time-limit``, ``lr`` for a rule's hyper-parameter) and its value, raises
:class:`~shmopt.errors.ConfigError` (or the ``error`` class given) when the value is refused, and
returns the value as the caller uses it (``float`` for a real, ``int`` for an integer).

It sits beside :mod:`shmopt.errors` and imports nothing else of shmopt, so the math layer
(:mod:`shmopt.rules`), the strategies, the problems and the front ends all use it.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable

from .errors import ConfigError

#: A check as a Config field declares it: ``check(name, value)`` raises or returns the value.
Check = Callable[[str, Any], Any]

__all__ = ["Check", "invalid", "integer", "number", "pair", "choice", "flag", "text", "output_path",
           "scoped"]


def invalid(name: str, value: object, must: str, error: type[ConfigError] = ConfigError) -> ConfigError:
    """The one-line error ``invalid NAME=VALUE: MUST``."""
    return error(f"invalid {name}={value!r}: {must}")


def integer(name: str, value: object, lo: int | None = None, hi: int | None = None, *, hint: str = "",
            error: type[ConfigError] = ConfigError) -> int:
    """An integer (not a bool) in ``[lo, hi]`` (either bound may be None)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) \
        and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        if lo is not None and hi is not None:
            rng = f" in [{lo}, {hi}]"
        elif lo is not None:
            rng = f" >= {lo}"
        else:
            rng = f" <= {hi}" if hi is not None else ""
        raise invalid(name, value, f"must be an integer{rng}{hint}", error)
    return int(value)  # type: ignore[call-overload]


def _interval(gt, ge, lt, le) -> str:
    lo, lo_open = (gt, True) if gt is not None else (ge, False)
    hi, hi_open = (lt, True) if lt is not None else (le, False)
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def number(name: str, value: object, *, gt: float | None = None, ge: float | None = None,
           lt: float | None = None, le: float | None = None, what: str = "",
           error: type[ConfigError] = ConfigError) -> float:
    """A finite real number within the bounds given (``gt``: > , ``ge``: >=, ``lt``: <, ``le``: <=).

    Anything ``float()`` takes that is not a bool, str or bytes counts as a number (numpy scalars
    included). ``what`` replaces the rendered interval in the message (e.g. ``"in (0, workers]"``).
    """
    rng = what or _interval(gt, ge, lt, le)
    sp = f" {rng}" if rng else ""
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise invalid(name, value, f"must be a real number{sp}", error)
    x = float(value)  # type: ignore[arg-type]
    if not math.isfinite(x):
        raise invalid(name, value, f"must be a finite number{sp}", error)
    if (gt is not None and not x > gt) or (ge is not None and not x >= ge) \
            or (lt is not None and not x < lt) or (le is not None and not x <= le):
        raise invalid(name, value, f"must be {rng}", error)
    return x


def pair(name: str, value: object, *, gt: float | None = None, ge: float | None = None,
         lt: float | None = None, le: float | None = None) -> tuple[float, float]:
    """Two numbers, each within the bounds (each checked as ``NAME[i]``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise invalid(name, value, f"must be a pair of numbers, each {_interval(gt, ge, lt, le)}")
    a, b = (number(f"{name}[{i}]", v, gt=gt, ge=ge, lt=lt, le=le) for i, v in enumerate(value))
    return a, b


def choice(name: str, value: object, accepted: Sequence[str],
           error: type[ConfigError] = ConfigError) -> str:
    """One of ``accepted``."""
    if not isinstance(value, str) or value not in accepted:
        raise invalid(name, value, f"choose one of {', '.join(accepted)}", error)
    return value


def flag(name: str, value: object) -> bool:
    """True or False (not 0, 1 or None)."""
    if not isinstance(value, bool):
        raise invalid(name, value, "must be True or False")
    return value


def text(name: str, value: object) -> str:
    """A non-empty string (a file path, a spec parsed elsewhere)."""
    if not isinstance(value, str) or not value:
        raise invalid(name, value, "must be a non-empty string")
    return value


def output_path(name: str, path: str | None) -> None:
    """An output file must be creatable before any work starts (no trained model lost at the end).

    This reads the file system, so it runs where the run is about to start, not when a
    Config is built (a stored Config stays valid wherever it is read)."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise invalid(name, path, "is a directory; give a file path")
    if not os.path.isdir(folder):
        raise invalid(name, path, f"directory {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise invalid(name, path, "not writable")


@contextmanager
def scoped(where: str, error: type[ConfigError] = ConfigError) -> Iterator[None]:
    """Re-raise a ConfigError from the block as ``error("WHERE: <message>")`` (a problem's
    options, a checkpoint's stored configuration): the same line, prefixed by where it was."""
    try:
        yield
    except ConfigError as e:
        raise error(f"{where}: {e}") from None
