r"""SGD on the touched rows of a table (torch.optim.SGD with sparse gradients, no momentum).

For each distinct touched row ``i`` with summed gradient ``G_i`` (:func:`~shmopt.rules.rows.coalesce`)::

    W[i] <- W[i] - lr * (G_i + weight_decay * W[i])

``weight_decay`` (L2) acts on the **touched rows only**: an untouched row is not decayed, unlike
``torch.optim.SGD``, which adds ``weight_decay * W`` to a sparse gradient and so densifies it and
decays every row.  Without weight decay the rule is linear in the gradient, so duplicate
indices are added one by one (``index_add_``), as torch adds an uncoalesced gradient.
Momentum is refused (``torch.optim.SGD`` accepts it by keeping a sparse momentum buffer that
grows to every row ever touched and decays them all at each step: not O(rows touched)).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from shmopt import checks
from shmopt.errors import ConfigError
from shmopt.rules.rows import RowRule, coalesce

__all__ = ["RowSGD"]


@dataclass(frozen=True)
class RowSGD(RowRule):
    """Row SGD, optional L2 weight decay on touched rows; no state."""

    name: ClassVar[str] = "row_sgd"
    linear: ClassVar[bool] = True

    lr: float = 0.01
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", checks.number("lr", self.lr, ge=0))
        object.__setattr__(self, "weight_decay", checks.number("weight_decay", self.weight_decay, ge=0))

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if options.get("momentum"):
            raise ConfigError(f"invalid momentum={options['momentum']!r} with sparse gradients: row SGD "
                              "has no momentum (its buffer would move every row touched so far); use "
                              "momentum=0")

    def state_specs(self, rows: int, dim: int) -> dict[str, tuple[int, ...]]:
        return {}

    def _apply(self, table: Tensor, indices: Tensor, values: Tensor, state: Mapping[str, Tensor],
               step: int, lr: float) -> None:
        if self.weight_decay:
            indices, values = coalesce(indices, values)     # a new block; each row decayed once
            values.add_(table.index_select(0, indices), alpha=self.weight_decay).mul_(-lr)
        else:
            values = values.mul(-lr)                        # the caller's gradient stays as it is
        table.index_add_(0, indices, values)                # alpha=1: torch's fast path (see rows.py)
