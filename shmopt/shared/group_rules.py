"""The update rule of each param group of a shared optimizer, and one update of every group.

The rule owns the mapping from a param group to its hyper-parameters: it is built by
``rule_class.from_options(group)`` (the keys that are the rule's fields are taken, the others,
``params`` and user tags included, ignored; a rule may refuse foreign options, as Adam refuses
momentum) and rebuilt when the group's hyper-parameters change.  The learning rate is not one
of them: every step passes the group's current ``lr`` (0 included, as in torch).  A group may
not switch on state that was not allocated when the optimizer was created.

Sparse gradients (``nn.Embedding(sparse=True)``) go to the group's *row rule*
(:class:`~shmopt.rules.RowRule`, built the same way from ``row_class``, when the first sparse
gradient comes), which updates the touched rows of the parameter seen as a ``(rows, dim)``
table.  An optimizer without a dense rule (``rule_class`` None) sends dense gradients to the row
rule too, as every row touched, unless it refuses them (SparseAdam).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from ..checks import number as check_number
from ..errors import ConfigError
from ..rules import RowRule, Rule
from ..strategies.lr import LrPolicy
from .param_groups import FlatGroup, flat_grad

__all__ = ["GroupRules"]


class GroupRules:
    """Builds, caches and applies the rules of a shared optimizer's param groups.

    ``sparse_refusal`` / ``dense_refusal``: the one-line messages for gradients of a kind the
    optimizer does not take (no ``row_class``; no ``rule_class`` and ``dense_rows=False``).
    """

    def __init__(self, rule_class: type[Rule] | None, defaults: dict[str, Any], structural: tuple[str, ...],
                 row_class: type[RowRule] | None = None, *, dense_rows: bool = True,
                 sparse_refusal: str = "", dense_refusal: str = "") -> None:
        self.rule_class, self.defaults, self.structural = rule_class, defaults, structural
        self.row_class, self.dense_rows = row_class, dense_rows
        self.sparse_refusal, self.dense_refusal = sparse_refusal, dense_refusal
        main = rule_class if rule_class is not None else row_class
        #: the group keys (besides lr) that define the rule: its fields the optimizer has defaults for
        self.hyper = tuple(f.name for f in fields(main)  # type: ignore[arg-type]
                           if f.init and f.name != "lr" and f.name in defaults)
        self.state_names: frozenset[str] | None = None     # the allocated state, once known

    @property
    def loadable(self) -> tuple[str, ...]:
        """The group keys a loaded state dict may set."""
        return tuple(k for k in ("lr",) + self.hyper if k not in self.structural)

    def rule_of(self, gi: int, group: dict[str, Any], g: FlatGroup) -> Rule | None:
        """The rule of group ``gi`` (rebuilt if its hyper-parameters changed; None without a
        dense rule: its row rule is validated instead); ConfigError names the group."""
        if self.rule_class is None:
            self.row_rule_of(gi, group, g)
            return None
        key = tuple(group[k] for k in self.hyper)
        if g.rule is None or key != g.key:
            g.rule, g.key = self._make(gi, group, self.rule_class), key
        return g.rule

    def row_rule_of(self, gi: int, group: dict[str, Any], g: FlatGroup) -> RowRule:
        """The row rule of group ``gi`` for sparse gradients (ConfigError if there is none)."""
        if self.row_class is None:
            raise ConfigError(f"param group {gi}: {self.sparse_refusal}")
        key = tuple(group[k] for k in self.defaults if k != "lr")
        if g.row_rule is None or key != g.row_key:
            g.row_rule, g.row_key = self._make(gi, group, self.row_class), key
        return g.row_rule

    def specs(self, groups: list[FlatGroup]) -> dict[str, bool]:
        """The state buffers the groups' rules need: name -> row-wise (one value per row)."""
        out: dict[str, bool] = {}
        for g in groups:
            if g.rule is not None:
                out.update((k, False) for k in g.rule.state_names)
            elif g.row_rule is not None:
                rw = g.row_rule.row_wise()
                out.update((k, k in rw) for k in g.row_rule.state_names)
        return out

    def init(self, groups: list[FlatGroup]) -> None:
        """Write every group's initial state."""
        for g in groups:
            if g.rule is not None:
                g.rule.init(g.state)
            else:
                for st in g.rstate:
                    g.row_rule.init(st)

    def _make(self, gi: int, group: dict[str, Any], cls: type[Rule] | type[RowRule]) -> Any:
        try:
            check_number("lr", group["lr"], ge=0)
            for k in self.structural:
                if group[k] != self.defaults[k]:
                    raise ConfigError(f"{k} cannot differ between param groups of a shared optimizer")
            rule = cls.from_options({**group, "lr": 1.0})    # 1.0: a stand-in, see above
        except ConfigError as e:
            raise ConfigError(f"param group {gi}: {e}") from e
        if self.state_names is not None and not set(rule.state_names) <= self.state_names:
            raise ConfigError(f"param group {gi} now needs the state {rule.state_names}, which was not "
                              f"allocated at creation (e.g. momentum switched on): create the optimizer "
                              f"with these hyper-parameters")
        return rule

    def apply(self, param_groups: list[dict[str, Any]], groups: list[FlatGroup],
              grads: list[list[Tensor | None]], t: int, lr_policy: LrPolicy | None, tau: int) -> None:
        """Update every group with its gradients (None: that parameter is skipped) as step ``t``
        of staleness ``tau``: once over the group's flat view when it has one and every gradient
        is dense, else once per parameter (a sparse one by the row rule)."""
        for gi, (group, g) in enumerate(zip(param_groups, groups)):
            gs = grads[gi]
            if not gs:
                continue
            rule = self.rule_of(gi, group, g)
            lr = float(group["lr"])
            if lr_policy is not None:
                lr = lr_policy(lr, tau)
            if rule is not None and g.flat is not None and all(x is not None and not x.is_sparse for x in gs):
                rule.update(g.flat, flat_grad(g, gs), g.state, t, lr)
                continue
            for j, (p, x) in enumerate(zip(group["params"], gs)):
                if x is None:
                    continue
                if rule is not None and not x.is_sparse:
                    rule.update(p.view(-1), x.reshape(-1).float(), g.pstate[j], t, lr)
                else:
                    self._row_update(gi, group, g, j, x, t, lr)

    def _row_update(self, gi: int, group: dict[str, Any], g: FlatGroup, j: int, x: Tensor, t: int,
                    lr: float) -> None:
        rule = self.row_rule_of(gi, group, g)
        rows, dim = g.shapes[j]
        if x.is_sparse:                  # coalesced only where the rule needs unique rows
            rule.update_sparse(group["params"][j].view(rows, dim), x, g.rstate[j], t, lr)
            return
        if self.dense_rows:
            idx, vals = torch.arange(rows), x.reshape(rows, dim).float()
        else:
            raise ConfigError(f"param group {gi}: {self.dense_refusal}")
        rule.update(group["params"][j].view(rows, dim), idx, vals, g.rstate[j], t, lr, unique=True)
