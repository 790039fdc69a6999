"""How a shared optimizer lays its param groups out over the flat state buffers, and how its
parameters travel to another process.

Every parameter of every group gets one slice ``[offsets[j], offsets[j+1])`` of each flat state
buffer, groups one after the other; a row-wise buffer (one value per row, for the row rules of
sparse gradients) gets ``[row_offsets[j], row_offsets[j+1])``, the parameter's first dimension
being its rows (:func:`table_shape`).  When a group's parameters are consecutive contiguous
float32 views of one storage (as after :func:`shmopt.shared.share`), :func:`chain` returns them
as one flat view and the rule runs once over the whole group; otherwise once per parameter.

Pickled, a parameter is a reference: ``("model", shared_model, index)`` for a parameter of a
:class:`~shmopt.shared.SharedModel` (which itself travels by handle), ``("tensor", p, 0)`` for a
tensor in torch shared memory; any other parameter is refused (a child would update a private
copy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..rules import RowRule, Rule
from .errors import SharingError
from .model import model_of

__all__ = ["FlatGroup", "chain", "lay_out", "table_shape", "bind_state", "flat_grad", "param_refs",
           "from_refs"]


def chain(tensors: list[Tensor], n: int) -> Tensor | None:
    """A 1-D view of ``n`` floats if ``tensors`` are consecutive contiguous float32 views of one
    storage (in order), else None."""
    first = tensors[0]
    base, off = first.data_ptr(), 0
    for t in tensors:
        if t.dtype != torch.float32 or not t.is_contiguous() or t.data_ptr() != base + 4 * off:
            return None
        off += t.numel()
    storage = first.untyped_storage()
    if storage.nbytes() < 4 * (first.storage_offset() + n):
        return None
    return torch.empty(0).set_(storage, first.storage_offset(), (n,), (1,))


@dataclass
class FlatGroup:
    """Per-param-group bookkeeping of this process (views of the shared buffers)."""

    start: int
    end: int
    offsets: list[int]
    flat: Tensor | None                      # the group's parameters as one view, if chained
    ptrs: list[int]                          # data_ptr of each parameter (moved = un-shared)
    state: dict[str, Tensor] = field(default_factory=dict)        # the group's slice of each buffer
    pstate: list[dict[str, Tensor]] = field(default_factory=list)  # each parameter's slice
    rule: Rule | None = None
    key: tuple = ()
    scratch: Tensor | None = None            # private flat gradient when grads are not chained
    row_offsets: list[int] = field(default_factory=list)   # slices of the row-wise buffers
    shapes: list[tuple[int, int]] = field(default_factory=list)  # each parameter as a (rows, dim) table
    rstate: list[dict[str, Tensor]] = field(default_factory=list)  # its state shaped for row rules
    row_rule: RowRule | None = None
    row_key: tuple = ()

    def clear(self) -> None:
        self.flat, self.state, self.pstate, self.scratch, self.rstate = None, {}, [], None, []


def lay_out(param_groups: list[dict[str, Any]]) -> list[FlatGroup]:
    """The slices of every group; refuses parameters a flat float32 buffer cannot mirror."""
    groups, start, row = [], 0, 0
    for gi, group in enumerate(param_groups):
        offsets, row_offsets, shapes = [start], [row], []
        for p in group["params"]:
            if p.dtype != torch.float32 or p.device.type != "cpu" or p.is_sparse or not p.is_contiguous():
                raise ConfigError(f"param group {gi}: shared optimizers take dense contiguous float32 "
                                  f"CPU parameters, got {p.dtype} on {p.device}")
            offsets.append(offsets[-1] + p.numel())
            shapes.append(table_shape(p))
            row_offsets.append(row_offsets[-1] + shapes[-1][0])
        flat = chain(group["params"], offsets[-1] - start) if group["params"] else None
        groups.append(FlatGroup(start, offsets[-1], offsets, flat, [p.data_ptr() for p in group["params"]],
                                row_offsets=row_offsets, shapes=shapes))
        start, row = offsets[-1], row_offsets[-1]
    return groups


def table_shape(p: Tensor) -> tuple[int, int]:
    """``p`` as a table for the row rules: ``(rows, numel / rows)`` with its first dimension as
    rows (an embedding's), one row for a 0-d parameter."""
    rows = p.shape[0] if p.dim() else 1
    return rows, math.prod(p.shape[1:]) if p.dim() else 1


def bind_state(param_groups: list[dict[str, Any]], groups: list[FlatGroup], buffers: dict[str, Tensor],
               keys: dict[str, str], state: dict[Tensor, dict[str, Tensor]],
               row_wise: frozenset[str] = frozenset()) -> None:
    """Make each group's and parameter's views of the flat ``buffers``; ``state[p]`` gets them
    shaped as ``p`` (``(rows,)`` for the ``row_wise`` buffers, sliced by rows) under their torch
    names (``keys``: buffer name -> torch key); ``g.rstate`` the same views shaped as tables."""
    for group, g in zip(param_groups, groups):
        g.state = {k: b[g.start:g.end] for k, b in buffers.items() if k not in row_wise}
        g.pstate, g.rstate = [], []
        bounds = zip(g.offsets, g.offsets[1:], g.row_offsets, g.row_offsets[1:], g.shapes)
        for p, (a, b, ra, rb, shape) in zip(group["params"], bounds):
            views = {k: buf[ra:rb] if k in row_wise else buf[a:b] for k, buf in buffers.items()}
            g.pstate.append(views)
            g.rstate.append({k: v if k in row_wise else v.view(shape) for k, v in views.items()})
            state[p] = {keys[k]: v if k in row_wise else v.view_as(p) for k, v in views.items()}


def flat_grad(g: FlatGroup, grads: list[Tensor]) -> Tensor:
    """The group's gradients as one flat tensor: a view if they are chained, else a copy into the
    group's private scratch buffer."""
    n = g.end - g.start
    view = chain(grads, n)
    if view is not None:
        return view
    if g.scratch is None:
        g.scratch = torch.empty(n)
    for x, a, b in zip(grads, g.offsets, g.offsets[1:]):
        if x.is_sparse:
            raise ConfigError("shared optimizers do not support sparse gradients")
        g.scratch[a - g.start:b - g.start].copy_(x.reshape(-1))
    return g.scratch


def param_refs(param_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The param groups with each parameter replaced by its reference (see the module doc)."""
    out = []
    for gi, group in enumerate(param_groups):
        refs = []
        for j, p in enumerate(group["params"]):
            found = model_of(p)
            if found is not None:
                found[0].check()
                refs.append(("model", found[0], found[1]))
            elif p.is_shared():
                refs.append(("tensor", p, 0))
            else:
                raise SharingError(
                    f"parameter {j} of param group {gi} is not in shared memory: a child process would "
                    f"update a private copy. Build the optimizer on shmopt.shared.share(model)"
                    f".parameters() (or call model.share_memory() before creating it)")
        out.append({**{k: v for k, v in group.items() if k != "params"}, "params": refs})
    return out


def from_refs(ref_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Inverse of :func:`param_refs` (after unpickling)."""
    return [{**group, "params": [obj._params[i] if kind == "model" else obj
                                 for kind, obj, i in group["params"]]} for group in ref_groups]
