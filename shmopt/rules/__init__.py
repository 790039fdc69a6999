"""Update rules: in-place math over flat float32 tensors (no engine imports).

``make_rule(name, **hyper)`` builds a rule from its registry name; every invalid
hyper-parameter raises :class:`shmopt.errors.ConfigError`.  Row rules (:class:`RowRule`,
:mod:`shmopt.rules.rows`) update the touched rows of a table from a sparse gradient: the engine
takes them by their ``TABLE_RULES`` name (``make_table_rule``), the shared optimizers directly.
"""
from __future__ import annotations

import dataclasses

from shmopt.errors import ConfigError
from shmopt.rules.adagrad import Adagrad
from shmopt.rules.adam import Adam, AMSGrad, fused_adam_available
from shmopt.rules.base import Rule
from shmopt.rules.row_adagrad import RowAdagrad, RowwiseAdagrad
from shmopt.rules.row_adam import LazyAdam, RowwiseAMSGrad
from shmopt.rules.row_sgd import RowSGD
from shmopt.rules.rows import RowRule, coalesce, from_sparse, union
from shmopt.rules.sgd import SGD

__all__ = ["Rule", "SGD", "Adam", "AMSGrad", "make_rule", "RULES", "fused_adam_available", "Adagrad",
           "RowRule", "TABLE_RULES", "make_table_rule", "RowSGD", "RowAdagrad", "RowwiseAdagrad", "LazyAdam",
           "RowwiseAMSGrad", "coalesce", "from_sparse", "union"]

RULES: dict[str, type[Rule]] = {"sgd": SGD, "adam": Adam, "amsgrad": AMSGrad}

#: the row rules a run's tables take (``--table-rule``); "adam" and "amsgrad" are the lazy forms
TABLE_RULES: dict[str, type[RowRule]] = {
    "sgd": RowSGD, "adagrad": RowAdagrad, "rowwise-adagrad": RowwiseAdagrad,
    "adam": LazyAdam, "amsgrad": LazyAdam, "rowwise-amsgrad": RowwiseAMSGrad}


def make_table_rule(name: str, options: dict) -> RowRule:
    """The row rule ``TABLE_RULES[name]`` built from a run's options (ConfigError if one is refused)."""
    cls = TABLE_RULES.get(name)
    if cls is None:
        raise ConfigError(f"unknown table rule {name!r}: choose one of {', '.join(TABLE_RULES)}")
    extra = {"amsgrad": name == "amsgrad"} if cls is LazyAdam else {}
    return cls.from_options({**options, **extra})

# Order in which the names are listed in error messages (APAM's rule first).
_LISTED = ("amsgrad", "adam", "sgd")


def _listed() -> list[str]:
    return [n for n in _LISTED if n in RULES] + sorted(n for n in RULES if n not in _LISTED)


def make_rule(name: str, **hyper: object) -> Rule:
    """Build the rule registered as ``name`` (case-insensitive) with the given hyper-parameters."""
    cls = RULES.get(name.strip().lower()) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown rule {name!r}: choose one of {', '.join(_listed())}")
    accepted = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(hyper) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown hyper-parameter{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} for rule {cls.name!r}: accepted are {', '.join(accepted)}")
    return cls(**hyper)
