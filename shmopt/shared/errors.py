"""The one error of :mod:`shmopt.shared`: something would move shared data out of shared memory."""
from __future__ import annotations

from ..errors import ConfigError

__all__ = ["SharingError"]


class SharingError(ConfigError):
    """An operation would move shared parameters or state out of shared memory (or did), or uses
    a shared object that is closed."""
