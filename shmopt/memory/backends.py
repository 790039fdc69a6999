"""The list of storage backends, and the dispatch on a device type or a handle's backend name.

A new backend (a memfd or hugepage host block, another device type) is one new module that
defines an object of the :class:`~shmopt.memory.storage.Backend` protocol, plus its entry in
:data:`BACKENDS` below. The first entry for a device type creates that type's blocks (a second
host backend listed before ``shm`` would become the default); every entry attaches its handles.
``--device`` accepts the device type of every entry (``cpu`` is built into shmopt.devices).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError
from . import cuda, shm
from .storage import Backend, Storage, StorageHandle

BACKENDS: tuple[Backend, ...] = (shm.BACKEND, cuda.BACKEND)


def device_types() -> tuple[str, ...]:
    """The device types that have a backend, in the order of :data:`BACKENDS`."""
    return tuple(dict.fromkeys(b.device_type for b in BACKENDS))


def backend_for(device_type: str) -> Backend:
    """The backend that creates the blocks of ``device_type`` devices."""
    for b in BACKENDS:
        if b.device_type == device_type:
            return b
    raise ConfigError(f"no storage backend for device {device_type}: available for "
                      f"{', '.join(sorted(device_types()))}")


def create_storage(nbytes: int, device: torch.device | str = "cpu", tag: str = "") -> Storage:
    """A new block on ``device``, owned by this process (see ``Backend.create``)."""
    device = torch.device(device)
    return backend_for(device.type).create(nbytes, device, tag)


def attach_storage(handle: StorageHandle) -> Storage:
    """The block of an exported handle, by the backend its handle names."""
    for b in BACKENDS:
        if b.name == handle.backend:
            return b.attach(handle)
    raise ConfigError(f"unknown storage backend {handle.backend!r} in an arena handle "
                      f"(known: {', '.join(sorted(b.name for b in BACKENDS))})")


def fence_for(device: str | torch.device) -> Callable[[], None]:
    """The call that waits for this process's queued work on ``device`` (``Backend.fence``)."""
    device = torch.device(device)
    return backend_for(device.type).fence(device)


def local_device(like: str | torch.device, device_id: str) -> torch.device:
    """The device of ``like``'s type that ``device_id`` (``Backend.device_id``, made by the
    supervisor) names, as this process numbers its devices."""
    kind = torch.device(like).type
    return torch.device(kind, backend_for(kind).local_index(device_id))
