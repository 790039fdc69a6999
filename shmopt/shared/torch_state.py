"""The torch ``state_dict`` format of the shared optimizers.

``state_dict()`` has torch's format: per parameter ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq``, ``momentum_buffer`` or ``sum`` (Adagrad's; one value per row for the
row-wise Adagrad) and ``step``, plus ``param_groups`` with parameter
indices.  Loading (ours or torch's) copies *into* the shared buffers, so every process sees the
loaded state (``torch.optim.Optimizer.load_state_dict`` would swap in private tensors), and
yields the step count to set.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .param_groups import FlatGroup

__all__ = ["TORCH_KEYS", "export_state", "import_state"]

#: shmopt rule state name -> torch.optim state key (also the order of the buffers in the arena)
TORCH_KEYS = {"m": "exp_avg", "v": "exp_avg_sq", "vmax": "max_exp_avg_sq",
              "momentum_buffer": "momentum_buffer", "sum": "sum"}


def export_state(param_groups: list[dict[str, Any]], groups: list[FlatGroup], step: int,
                 row_wise: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A torch-format state dict of private copies of the shared state (a ``row_wise`` buffer
    as one value per row of the parameter)."""
    step_t = torch.tensor(float(step))
    state, saved_groups, idx = {}, [], 0
    for group, g in zip(param_groups, groups):
        ids = []
        for p, views in zip(group["params"], g.pstate):
            state[idx] = {"step": step_t.clone(),
                          **{TORCH_KEYS[k]: v.clone() if k in row_wise else v.clone().view_as(p)
                             for k, v in views.items()}}
            ids.append(idx)
            idx += 1
        saved_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
    return {"state": state, "param_groups": saved_groups}


def _check_loadable(param_groups: list[dict[str, Any]], saved_groups: list[dict[str, Any]]) -> None:
    if len(saved_groups) != len(param_groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, param_groups)):
        raise ValueError("loaded state dict does not match the optimizer's param groups (number of "
                         "groups or of parameters per group)")
    for saved in saved_groups:
        if saved.get("decoupled_weight_decay"):
            raise ConfigError("cannot load a state dict saved with decoupled weight decay (AdamW): the "
                              "shared optimizers do not implement it")


@torch.no_grad()
def import_state(param_groups: list[dict[str, Any]], groups: list[FlatGroup], state_dict: dict[str, Any],
                 hyper: tuple[str, ...]) -> int:
    """Copy ``state_dict`` into the shared views (parameters with no saved state get zeros) and
    its ``hyper`` group keys into ``param_groups``; return the step count it implies."""
    saved_groups = state_dict["param_groups"]
    _check_loadable(param_groups, saved_groups)
    saved_state = state_dict["state"]
    steps, has_state = [], False
    for group, g, saved in zip(param_groups, groups, saved_groups):
        for _p, views, pid in zip(group["params"], g.pstate, saved["params"]):
            st = saved_state.get(pid, {})
            for k, v in views.items():
                value = st.get(TORCH_KEYS[k])
                if value is None:
                    v.zero_()
                    continue
                if value.numel() != v.numel():
                    raise ValueError(f"state {TORCH_KEYS[k]!r} of parameter {pid} has {value.numel()} "
                                     f"elements, the parameter {v.numel()}")
                v.copy_(value.reshape(-1))
                has_state = True
            if "step" in st:
                steps.append(int(float(st["step"])))
    for group, saved in zip(param_groups, saved_groups):
        for k in (*hyper, "maximize"):
            if k in saved:
                group[k] = tuple(saved[k]) if isinstance(saved[k], list) else saved[k]
    return max(steps) if steps else int(has_state)
