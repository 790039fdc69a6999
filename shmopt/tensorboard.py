"""TensorBoard output (``--tensorboard DIR``, the ``tensorboard`` extra): every evaluation's
loss, metrics, throughput and staleness as scalars, against the update count, in DIR (one
subfolder per run label for ``shmopt compare``)."""
from __future__ import annotations

import os

from .errors import ConfigError

__all__ = ["TensorBoard", "check_tensorboard"]

HINT = "pip install 'shmopt[tensorboard]' (or tensorboard)"


def check_tensorboard(path: str | None) -> None:
    """Refuse, before any work starts, a DIR that cannot be written or a missing package."""
    if not path:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"invalid tensorboard={path!r}: is a file; give a folder")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"invalid tensorboard={path!r}: directory {parent!r} does not exist")
    if not os.access(path if os.path.isdir(path) else parent, os.W_OK):
        raise ConfigError(f"invalid tensorboard={path!r}: not writable")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(f"--tensorboard needs the tensorboard package: {HINT}") from None


class TensorBoard:
    """An ``on_sample`` callback writing scalars with ``torch.utils.tensorboard``."""

    def __init__(self, path: str) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(path)

    def sample(self, s) -> None:
        step = int(s.updates)
        if s.loss is not None:
            self.writer.add_scalar("eval/loss", s.loss, step)
        for name, value in (s.metrics or {}).items():
            self.writer.add_scalar(f"eval/{name}", value, step)
        self.writer.add_scalar("train/samples_per_s", s.samples_per_s, step)
        self.writer.add_scalar("train/staleness_mean", s.staleness_mean, step)
        self.writer.add_scalar("train/seconds", s.t, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
