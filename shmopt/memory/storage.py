"""The storage protocol: where an arena's bytes live, and dispatch on a handle's backend.

A backend gives four things: ``create(nbytes)`` (the owner), ``attach(handle)`` from another
process by a picklable :class:`StorageHandle` (never tracked by the child), ``bytes(offset,
nbytes)``, a ``torch.uint8`` view of a byte range on the storage's device (every typed view of the
arena is made from it by torch), and release (``close`` detaches, ``unlink`` removes the block).
Host backends also give ``host_buffer()`` for the numpy views of the control block.

Backends register by name (:func:`register_backend`); :func:`attach_storage` picks the class
from ``handle.backend``, so a CUDA-IPC backend is one new module that registers itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class StorageHandle:
    """Picklable reference to a block: enough for a child process to attach."""

    backend: str
    name: str
    nbytes: int
    extra: Any = None           # backend-specific attach data (e.g. a CUDA IPC handle)


class Storage(Protocol):
    handle: StorageHandle
    device: torch.device

    def bytes(self, offset: int, nbytes: int) -> torch.Tensor: ...
    def host_buffer(self) -> memoryview: ...
    def close(self) -> None: ...
    def unlink(self) -> None: ...


class Backend(Protocol):
    def create(self, nbytes: int, device: torch.device, tag: str = "") -> Storage: ...
    def attach(self, handle: StorageHandle) -> Storage: ...


_BACKENDS: dict[str, Backend] = {}
_FOR_DEVICE: dict[str, str] = {}


def register_backend(name: str, backend: Backend, device_type: str) -> None:
    """Make ``backend`` the storage of arenas whose buffers live on ``device_type`` devices."""
    _BACKENDS[name] = backend
    _FOR_DEVICE[device_type] = name


def create_storage(nbytes: int, device: torch.device | str = "cpu", tag: str = "") -> Storage:
    device = torch.device(device)
    name = _FOR_DEVICE.get(device.type)
    if name is None:
        raise ConfigError(f"no storage backend for device {device}: available for "
                          f"{', '.join(sorted(_FOR_DEVICE))}")
    return _BACKENDS[name].create(nbytes, device, tag)


def attach_storage(handle: StorageHandle) -> Storage:
    backend = _BACKENDS.get(handle.backend)
    if backend is None:
        raise ConfigError(f"unknown storage backend {handle.backend!r} in an arena handle "
                          f"(known: {', '.join(sorted(_BACKENDS))})")
    return backend.attach(handle)
