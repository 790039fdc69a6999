"""Checkpoints of the whole shared state, written atomically, loaded without unpickling code.

A checkpoint is a ``torch.save`` file of plain containers and tensors only (so ``torch.load(...,
weights_only=True)`` reads it and never runs arbitrary code): every arena buffer that is state
(parameters or replicas, rule state, the centre, the control block as raw bytes), not the
problem's data nor per-gradient scratch (snapshots, gradient slots: gradients in flight are
dropped on resume), the layout, the configuration, a signature of the model and a
digest of the data. Writing goes to a temporary file in the same directory, is fsync'ed and then
renamed over the target, so a crash leaves either the old or the new checkpoint, never half of one.

Resuming refuses a checkpoint whose algorithm, rule, model or layout differ from the run's (with a
message naming the difference); data that differs (its fingerprint: sources.Rows.fingerprint) is
refused too. Another worker count is resumed by :mod:`.reshard` (direct and server protocols).
"""
from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ConfigError
from ..memory import Arena, Layout
from ..strategies.position import read_position
from .checkpoint_files import TEMP_PREFIX, check_digest
from .control import RUN_FIELDS, SLOT
from .layout import ORDER
from .staged_file import StagedFile

FORMAT = "shmopt-checkpoint"
VERSION = 3         # 2: one control slot per process (engine.roles), replica methods' buffers;
                    # 3: each learner's data position (its order and offsets)
PER_PROCESS = ("pid", "status", "heartbeat", "t_ready")   # control fields a new run re-creates


def model_signature(model: torch.nn.Module) -> list[list]:
    return [[name, list(p.shape)] for name, p in model.named_parameters()]


def _layout_rows(layout: Layout) -> list[list]:
    return [[e.name, list(e.shape), e.dtype.str if not e.dtype.fields else repr(e.dtype.descr)]
            for e in layout.entries]


def views(arena: Arena, skip: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Every buffer not in ``skip`` as the shared bytes themselves (:meth:`Arena.own_bytes`): written
    straight from shared memory, nothing copied. Host arenas; what runs goes on writing them."""
    return {e.name: arena.own_bytes(e.name) for e in arena.layout.entries if e.name not in skip}


def live(arena: Arena, skip: tuple[str, ...], learners: int) -> dict[str, torch.Tensor]:
    """What a checkpoint of a running lock-free run holds: :func:`views` of the shared state, which
    the learners go on writing while it is written (a torn read, as valid as any Hogwild read),
    and the control block and the orders as :func:`positions` reads them."""
    return positions(views(arena, skip + ("ctrl", ORDER)), arena, skip, learners)


def positions(out: dict[str, torch.Tensor], arena: Arena, skip: tuple[str, ...],
              learners: int) -> dict[str, torch.Tensor]:
    """``out`` with private copies of the control block and the orders in which each running
    learner's data position is read whole (strategies.position): what a checkpoint holds of
    learners that go on while it is taken."""
    shared = arena.array("ctrl")
    ctrl = shared.copy()
    order = arena.tensor(ORDER) if ORDER in arena and ORDER not in skip else None
    orders = torch.zeros_like(order) if order is not None else None   # a learner between passes: none
    for r in range(learners):
        copy = (lambda r=r: order[r].clone()) if order is not None else None
        epoch, length, off, rows = read_position(shared[r], copy)
        ctrl[r]["s_epoch"], ctrl[r]["s_len"], ctrl[r]["s_off"] = epoch, length, off
        if rows is not None:
            orders[r] = rows
    out["ctrl"] = torch.from_numpy(ctrl.view(np.uint8).reshape(-1))
    if orders is not None:
        out[ORDER] = orders.view(torch.uint8).reshape(-1)
    return out


def updates_of(buffers: dict[str, torch.Tensor], learners: int) -> int:
    """The direct protocol's update count in a checkpoint's control block: its learners' sum."""
    return int(np.frombuffer(buffers["ctrl"].numpy(), dtype=SLOT)["updates"][:learners].sum())


def staging(arena: Arena, skip: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Private host buffers for :func:`copies`, their pages already faulted in (zero-filled): made
    before a run pauses, so that the pause lasts only the copy (most of a fresh copy's time goes to
    faulting its pages in: 0.5 s of a 2 GB copy, against 0.15 s into touched pages)."""
    return {e.name: torch.zeros(e.nbytes, dtype=torch.uint8) for e in arena.layout.entries
            if e.name not in skip}


def copies(arena: Arena, skip: tuple[str, ...],
           into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Every buffer not in ``skip`` as a private copy in host memory (a consistent copy taken while
    the run is paused, or a device arena's bytes), into ``into`` (:func:`staging`) when given."""
    into = staging(arena, skip) if into is None else into
    for name, dst in into.items():
        dst.copy_(arena.raw(name))
    return into


def save(path: str, buffers: dict[str, torch.Tensor], layout: Layout, meta: dict[str, Any]) -> str:
    """Write ``buffers`` (name -> the buffer's bytes, :func:`views` or :func:`copies`) and ``meta``
    atomically; the file's SHA-256."""
    return write_atomic(path, {"format": FORMAT, "version": VERSION, "layout": _layout_rows(layout),
                               "buffers": buffers, **meta})


_CRC_LOCK = threading.Lock()


@contextmanager
def _without_zip_crc() -> Iterator[None]:
    """``torch.save`` without the CRC-32 of every zip record: a second pass over every byte (0.5
    CPU-seconds per 2 GB, a quarter of a checkpoint's writing), which the file's SHA-256, checked
    at every load, already covers; ``torch.load`` reads such a file as any other. The option is
    process-wide: a ``torch.save`` elsewhere in the process meanwhile writes records without CRC
    too (torch.load reads them alike). Torch before 2.6 has no such option: CRCs are written."""
    set_crc = getattr(torch.serialization, "set_crc32_options", None)
    if set_crc is None:
        yield
        return
    with _CRC_LOCK:
        was = torch.serialization.get_crc32_options()
        set_crc(False)
        try:
            yield
        finally:
            set_crc(was)


def write_atomic(path: str, doc: dict[str, Any]) -> str:
    """``torch.save(doc)`` to a temporary file beside ``path`` (through a hashing staging buffer,
    around the page cache: :mod:`.staged_file`), fsync'ed, renamed over it; the file's SHA-256."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=directory)
    try:
        out = StagedFile(fd)
        try:
            with _without_zip_crc():
                torch.save(doc, out)
            digest = out.finish()
        except RuntimeError:
            if out.error is None:
                raise
            raise out.error from None            # the full disk, not torch's "unexpected pos"
        finally:
            out.close()
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest


def load(path: str, mmap: bool = False) -> dict[str, Any]:
    """Read and sanity-check a checkpoint (ConfigError for a missing, corrupt or foreign file);
    ``mmap``: its tensors are read from the file as they are used."""
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path!r} does not exist")
    check_digest(path)                          # its sidecar's digest: a corrupted file that unpickles
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"checkpoint {path!r} is corrupt or truncated ({type(exc).__name__}: "
                          f"{first[:160]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"{path!r} is not a shmopt checkpoint")
    if doc.get("version") != VERSION:
        raise ConfigError(f"checkpoint {path!r} has format version {doc.get('version')}, "
                          f"this shmopt reads version {VERSION} (written by another shmopt release: "
                          f"resume it with that release)")
    return doc


def check_compatible(doc: dict, path: str, expected: dict[str, Any], layout: Layout,
                     skip: tuple[str, ...]) -> None:
    """Refuse a checkpoint of another algorithm, rule, worker count, model, data or layout."""
    for key, want in expected.items():
        have = doc.get(key)
        if have != want:
            raise ConfigError(f"checkpoint {path!r} does not fit this run: {key} is {_short(have)} "
                              f"in the checkpoint but {_short(want)} here")
    rows = [r for r in _layout_rows(layout) if r[0] not in skip]
    saved = [r for r in doc["layout"] if r[0] not in skip]
    if rows != saved:
        raise ConfigError(f"checkpoint {path!r} does not fit this run: its shared-memory layout "
                          f"differs (other options, e.g. --read or --protocol)")


def restore(doc: dict, arena: Arena) -> None:
    """Copy the checkpoint's buffers into a fresh arena (control fields of dead processes reset;
    the caller empties the gradient mailbox)."""
    for name, raw in doc["buffers"].items():
        arena.raw(name).copy_(raw)
    ctrl = arena.array("ctrl")
    for f in PER_PROCESS:
        ctrl[f] = 0
    glob = arena.array("glob")
    for f in RUN_FIELDS:
        glob[f] = 0


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."
