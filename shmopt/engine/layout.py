"""What goes into the arena for a plan: the engine's buffer list, in one place."""
from __future__ import annotations

import torch

from ..config import Plan
from .arena import Layout
from .control import GLOBAL, SLOT

GRAD_SLOTS = 2      # per learner in server protocols: push one while the server reads the other
PAD_I64 = 16        # 128 bytes per learner for the server-written "consumed" counters


def data_names(tensors: tuple[torch.Tensor, ...], prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(len(tensors))]


def build_layout(plan: Plan, n: int, rule_state: tuple[str, ...], train: tuple[torch.Tensor, ...]) -> Layout:
    P = plan.workers
    specs: list[tuple] = [("glob", (1,), GLOBAL), ("ctrl", (P + 1,), SLOT)]
    if plan.protocol == "replicas":     # one replica (and rule state) per worker
        specs.append(("x", (P, n), "float32"))
        specs += [(f"state_{s}", (P, n), "float32") for s in rule_state]
        if plan.variant == "easgd":
            specs.append(("center", (n,), "float32"))
    else:
        specs.append(("x", (n,), "float32"))
        specs += [(f"state_{s}", (n,), "float32") for s in rule_state]
    if plan.protocol == "server" or (plan.protocol == "direct" and plan.config.read == "snapshot"):
        specs.append(("snap", (P, n), "float32"))
    if plan.protocol == "server":
        specs += [("grad_slots", (P, GRAD_SLOTS, n), "float32"),
                  ("slot_version", (P, GRAD_SLOTS), "int64"),
                  ("consumed", (P, PAD_I64), "int64")]
        if plan.lr_policy.needs_distance:    # the parameters each pushed gradient was read at
            specs.append(("wread", (P, GRAD_SLOTS, n), "float32"))
    for name, t in zip(data_names(train, "data"), train):
        specs.append((name, tuple(t.shape), t.numpy().dtype))
    return Layout.build(specs)
