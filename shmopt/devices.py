"""Which device an arena's buffers live on (``--device``), validated before anything starts.

``cpu`` (default): POSIX shared memory. ``cuda`` or ``cuda:N``: the parameters, rule state,
snapshots, gradient slots and data in one CUDA block shared by CUDA IPC (memory/cuda.py), the
control block in host shared memory; every worker on that one GPU. ``auto``: ``cuda`` when a CUDA
device is visible, else ``cpu`` (the summary says which). Asking for CUDA never initialises it
here: availability is read through NVML where torch can (PYTORCH_NVML_BASED_CUDA_CHECK), so a
forkserver started afterwards still forks a CUDA-free process.
"""
from __future__ import annotations

import os

import torch

from .errors import ConfigError

DEVICES = "cpu, cuda, cuda:N or auto"


def cuda_count() -> int:
    """Visible CUDA devices (0 in a CPU build)."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if not torch.cuda.is_available():
        return 0
    return torch.cuda.device_count()


def resolve_gpus(c, device_text: str, count=cuda_count) -> tuple[str, ...]:
    """``--gpus G``: the UUIDs of the G devices the learners compute on, from the arena's (empty
    for one GPU: everything on the arena's device)."""
    g = c.gpus
    if isinstance(g, bool) or not isinstance(g, int) or g < 1:
        raise ConfigError(f"invalid gpus={g!r}: must be an integer >= 1")
    if g == 1:
        return ()
    device = resolve_device(device_text, count=count)
    if device == "cpu":
        raise ConfigError(f"--gpus {g} needs --device cuda (the arena on a GPU)")
    first, n = int(device.split(":")[1]), count()
    if g > n - first:
        raise ConfigError(f"invalid gpus={g}: {n} CUDA device(s) visible, {n - first} from {device}")
    if c.protocol == "replicas" or c.algo in ("lsgd", "easgd"):
        raise ConfigError("--gpus > 1 runs the direct and server protocols; lsgd/easgd replicas run on one GPU")
    if c.lr_policy == "dutta" or c.read == "inplace":
        raise ConfigError("--gpus > 1 computes from a copy on each GPU: use --read snapshot and an lr "
                          "policy other than dutta")
    from .memory.cuda import device_uuid
    return tuple(device_uuid(i) for i in range(first, first + g))


def resolve_device(text: str, nnodes: int = 1, count=cuda_count) -> str:
    """``--device`` -> a torch device string; ConfigError naming what was wrong."""
    if not isinstance(text, str):
        raise ConfigError(f"invalid device={text!r}: choose {DEVICES}")
    t = text.strip().lower()
    if t == "cpu":
        return "cpu"
    if t == "auto":
        t = "cuda" if count() > 0 else "cpu"
        if t == "cpu":
            return "cpu"
    kind, _, index = t.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"invalid device={text!r}: choose {DEVICES}")
    n = count()
    if n == 0:
        raise ConfigError(f"--device {text}: torch {torch.__version__} sees no CUDA device (a CPU build, "
                          f"no driver, or CUDA_VISIBLE_DEVICES empty); use --device cpu")
    i = int(index or 0)
    if i >= n:
        raise ConfigError(f"invalid device={text!r}: {n} CUDA device(s) visible, indices 0..{n - 1}")
    if nnodes > 1:
        raise ConfigError("--device cuda across nodes needs NCCL between the nodes, which shmopt does not "
                          "have yet: use --device cpu with --nnodes > 1")
    from .memory.cuda import expandable_segments_on
    if expandable_segments_on():
        raise ConfigError("PYTORCH_CUDA_ALLOC_CONF turns expandable_segments on: a CUDA arena needs it off "
                          "(CUDA IPC of expandable segments fails in containers); unset it")
    return f"cuda:{i}"
