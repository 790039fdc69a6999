"""Which device an arena's buffers live on (``--device``) and which devices the learners compute
on (``--gpus``), validated before anything starts.

``cpu`` (default, built in): POSIX shared memory. ``TYPE`` or ``TYPE:N`` for every device type
with a storage backend (shmopt.memory.backends; today ``cuda``): the parameters, rule state,
snapshots, gradient slots and data in one block on that device, the control block in host shared
memory. ``auto``: the first such type with a visible device, else ``cpu`` (the summary says
which). ``--gpus G`` spreads the learners over G devices, starting at the arena's; a learner on
another device than the arena's computes from its own copy. The checks that belong to a device type
(what it needs, what it refuses) are its backend's ``resolve``; the backends read counts without
initialising a device, so a forkserver started afterwards still forks a clean process.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError
from .memory.backends import backend_for, device_types
from .strategies.replicas import REPLICA_METHODS


def accelerators() -> tuple[str, ...]:
    """The device types with a registered backend besides the host (``cuda``)."""
    return tuple(t for t in device_types() if t != "cpu")


def choices() -> str:
    """The ``--device`` forms, for messages: ``cpu, cuda, cuda:N or auto``."""
    return ", ".join(["cpu", *(f"{t}, {t}:N" for t in accelerators())]) + " or auto"


def _count(device_type: str, count: Callable[[], int] | None) -> int:
    return (count or backend_for(device_type).device_count)()


def resolve_gpus(c, device_text: str, count: Callable[[], int] | None = None) -> tuple[str, ...]:
    """``--gpus G``: the stable ids (CUDA: UUIDs) of the G devices the learners compute on, from
    the arena's (empty for one GPU: everything on the arena's device). ``count`` replaces the
    backend's device count (tests)."""
    g = c.gpus
    if isinstance(g, bool) or not isinstance(g, int) or g < 1:
        raise ConfigError(f"invalid gpus={g!r}: must be an integer >= 1")
    if g == 1:
        return ()
    device = resolve_device(device_text, count=count)
    if device == "cpu":
        raise ConfigError(f"--gpus {g} needs --device cuda (the arena on a GPU)")
    d = torch.device(device)
    backend = backend_for(d.type)
    first, n = d.index or 0, _count(d.type, count)
    if g > n - first:
        raise ConfigError(f"invalid gpus={g}: {n} {backend.label} device(s) visible, {n - first} "
                          f"from {device}")
    if c.algo in REPLICA_METHODS:
        raise ConfigError(f"--gpus > 1 runs the direct and server protocols; the replica methods "
                          f"({', '.join(REPLICA_METHODS)}) run on one GPU")
    if c.lr_policy == "dutta" or c.read == "inplace":
        raise ConfigError("--gpus > 1 computes from a copy on each GPU: use --read snapshot and an lr "
                          "policy other than dutta")
    return tuple(backend.device_id(i) for i in range(first, first + g))


def resolve_device(text: str, nnodes: int = 1, count: Callable[[], int] | None = None) -> str:
    """``--device`` -> a torch device string; ConfigError naming what was wrong. ``count``
    replaces the backend's device count (tests)."""
    if not isinstance(text, str):
        raise ConfigError(f"invalid device={text!r}: choose {choices()}")
    t = text.strip().lower()
    if t == "cpu":
        return "cpu"
    if t == "auto":
        t = next((k for k in accelerators() if _count(k, count) > 0), "cpu")
        if t == "cpu":
            return "cpu"
    kind, _, index = t.partition(":")
    if kind not in accelerators() or (index and not index.isdigit()):
        raise ConfigError(f"invalid device={text!r}: choose {choices()}")
    return backend_for(kind).resolve(text, int(index) if index else None, _count(kind, count), nnodes)
