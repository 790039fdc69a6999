"""The update rule of each param group of a shared optimizer, and one update of every group.

The rule owns the mapping from a param group to its hyper-parameters: it is built by
``rule_class.from_options(group)`` (the keys that are the rule's fields are taken, the others,
``params`` and user tags included, ignored; a rule may refuse foreign options, as Adam refuses
momentum) and rebuilt when the group's hyper-parameters change.  The learning rate is not one
of them: every step passes the group's current ``lr`` (0 included, as in torch).  A group may
not switch on state that was not allocated when the optimizer was created.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from torch import Tensor

from ..checks import number as check_number
from ..errors import ConfigError
from ..rules import Rule
from ..strategies.lr import LrPolicy
from .param_groups import FlatGroup, flat_grad

__all__ = ["GroupRules"]


class GroupRules:
    """Builds, caches and applies the rules of a shared optimizer's param groups."""

    def __init__(self, rule_class: type[Rule], defaults: dict[str, Any], structural: tuple[str, ...]) -> None:
        self.rule_class, self.defaults, self.structural = rule_class, defaults, structural
        #: the group keys (besides lr) that define the rule: its fields the optimizer has defaults for
        self.hyper = tuple(f.name for f in fields(rule_class)  # type: ignore[arg-type]
                           if f.init and f.name != "lr" and f.name in defaults)
        self.state_names: frozenset[str] | None = None     # the allocated state, once known

    @property
    def loadable(self) -> tuple[str, ...]:
        """The group keys a loaded state dict may set."""
        return tuple(k for k in ("lr",) + self.hyper if k not in self.structural)

    def rule_of(self, gi: int, group: dict[str, Any], g: FlatGroup) -> Rule:
        """The rule of group ``gi`` (rebuilt if its hyper-parameters changed); ConfigError names
        the group."""
        key = tuple(group[k] for k in self.hyper)
        if g.rule is None or key != g.key:
            try:
                rule = self._make(group)
            except ConfigError as e:
                raise ConfigError(f"param group {gi}: {e}") from e
            if self.state_names is not None and not set(rule.state_names) <= self.state_names:
                raise ConfigError(f"param group {gi} now needs the state {rule.state_names}, which was not "
                                  f"allocated at creation (e.g. momentum switched on): create the optimizer "
                                  f"with these hyper-parameters")
            g.rule, g.key = rule, key
        return g.rule

    def _make(self, group: dict[str, Any]) -> Rule:
        check_number("lr", group["lr"], ge=0)
        for k in self.structural:
            if group[k] != self.defaults[k]:
                raise ConfigError(f"{k} cannot differ between param groups of a shared optimizer")
        return self.rule_class.from_options({**group, "lr": 1.0})    # 1.0: a stand-in, see above

    def apply(self, param_groups: list[dict[str, Any]], groups: list[FlatGroup],
              grads: list[list[Tensor | None]], t: int, lr_policy: LrPolicy | None, tau: int) -> None:
        """Update every group with its gradients (None: that parameter is skipped) as step ``t``
        of staleness ``tau``: once over the group's flat view when it has one and every gradient,
        else once per parameter."""
        for gi, (group, g) in enumerate(zip(param_groups, groups)):
            gs = grads[gi]
            if not gs:
                continue
            rule = self.rule_of(gi, group, g)
            lr = float(group["lr"])
            if lr_policy is not None:
                lr = lr_policy(lr, tau)
            if g.flat is not None and all(x is not None for x in gs):
                rule.update(g.flat, flat_grad(g, gs), g.state, t, lr)
                continue
            for p, x, st in zip(group["params"], gs, g.pstate):
                if x is not None:
                    if x.is_sparse:
                        raise ConfigError("shared optimizers do not support sparse gradients")
                    rule.update(p.view(-1), x.reshape(-1).float(), st, t, lr)
