"""Versioned weights for actor-learner training: one publisher, any number of readers.

``publisher = shmopt.weights.publish(model)`` (the learner) lays out the model's ``state_dict`` in
one shared-memory arena with ``SLOTS`` copies; ``publisher.publish()`` copies the current weights
into the slot of version v+1 and returns v+1. ``reader = shmopt.weights.attach(publisher.name)``
(any process on the machine, started by shmopt or not) copies the newest complete version into a
model with ``reader.read_into(model)``, or waits for one at least as new as ``min_version``.

No reader ever sees a mix of two versions, and the publisher never waits for a reader. Each slot
has a sequence number, odd while the publisher writes the slot. Version v goes to slot v mod
SLOTS, so a reader copying version v has SLOTS - 1 further publishes' time before its slot is
written again. A reader copies, then checks that the slot's sequence number did not move while it
copied, and copies the newest version again if it did.

Every reader has a slot of its own, with its pid and the version it last read.
``publisher.readers()`` gives each reader's staleness (the newest version minus the one it read),
so a learner can drop the contributions of actors that fell behind, as ``--max-staleness`` does
for gradients.

The arena is removed when the publisher is closed, garbage collected, or when its process exits.
A killed publisher's segment goes with multiprocessing's resource tracker, or with the next run's
sweep of segments whose owner is dead. A reader whose publisher is gone raises
:class:`PublisherGone` at its next read or wait, and never hangs.
"""
from __future__ import annotations

import os
import time
import weakref
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from . import checks
from .errors import ConfigError, ShmoptError
from .memory import Arena, ArenaHandle, Layout
from .memory.backends import fence_for
from .memory.describe import read_trailer
from .memory.layout import HOST
from .memory.shm import pid_alive
from .weight_rows import History, RowLog, check_tables, default_tables
from .weight_rows import specs as log_specs

__all__ = ["publish", "attach", "Publisher", "Reader", "PublisherGone", "SLOTS", "MAX_READERS"]

KIND, FORMAT = "shmopt-weights", 1
SLOTS = 3                     # copies of the weights: a reader has SLOTS - 1 publishes to finish
MAX_READERS = 64
HEAD = np.dtype([("version", "i8"), ("publisher_pid", "i8"), ("closed", "i8"), ("t_publish", "f8"),
                 ("seq", "i8", (SLOTS,)), ("slot_version", "i8", (SLOTS,))], align=True)
READER = np.dtype([("pid", "i8"), ("version", "i8"), ("reads", "i8"), ("t_read", "f8")], align=True)
ALIGN = 64


class PublisherGone(ShmoptError, RuntimeError):
    """The publisher of the weights was closed or its process died."""


def _entries(model: torch.nn.Module) -> list[dict[str, Any]]:
    """name, shape, dtype and byte offset of every tensor of the model's state_dict."""
    out, offset = [], 0
    for name, t in model.state_dict().items():
        nbytes = t.numel() * t.element_size()
        out.append({"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                    "offset": offset, "nbytes": nbytes})
        offset += -(-nbytes // ALIGN) * ALIGN
    return out


def _views(buf: torch.Tensor, entries: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Typed views of one slot's bytes, by state_dict name."""
    return {e["name"]: buf[e["offset"]:e["offset"] + e["nbytes"]].view(getattr(torch, e["dtype"]))
            .view(e["shape"]) for e in entries}


def _state(model: torch.nn.Module, entries: list[dict[str, Any]], what: str) -> dict[str, torch.Tensor]:
    """The model's state_dict tensors, checked against the published layout."""
    state = model.state_dict()
    layout = [(e["name"], tuple(e["shape"]), e["dtype"]) for e in entries]
    mine = [(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in state.items()]
    if mine != layout:
        diff = next(((a, b) for a, b in zip(layout, mine) if a != b), (layout[len(mine):len(mine) + 1],
                                                                       mine[len(layout):len(layout) + 1]))
        raise ConfigError(f"{what}: the model does not match the published weights (published "
                          f"{diff[0]}, this model {diff[1]})")
    return state


class _Weights:
    def _bind(self, arena: Arena, meta: dict) -> None:
        self.arena, self.name, self.entries = arena, arena.name, meta["entries"]
        self.fence = fence_for(arena.device)        # a GPU's copies are done before a version counts
        self.head = arena.array("head")[0]
        self.slots_ = [_views(arena.tensor(f"w{k}"), self.entries) for k in range(SLOTS)]
        self.tables = meta["tables"]
        self.log = RowLog(arena, self.tables, SLOTS)

    @property
    def version(self) -> int:
        """The newest complete version (0: none yet)."""
        return int(self.head["version"])


class Publisher(_Weights):
    """The learner's side (see the module text). Use as a context manager, or call :meth:`close`.

    Across machines (``group``: a torch.distributed process group of one rank per node, gloo),
    every node holds a publisher of its own and calls :meth:`publish` together: the weights of rank
    ``src`` (the learner's node) are broadcast straight into the next slot of every node's arena
    and published there under the same version, so each node's readers read locally."""

    def __init__(self, model: torch.nn.Module, group: Any = None, src: int = 0,
                 tables: tuple[str, ...] | None = None, device: str = "cpu") -> None:
        self.group, self.src = group, src
        entries = _entries(model)
        tables_ = check_tables(default_tables(model) if tables is None else tuple(tables), entries)
        size = max(sum(-(-e["nbytes"] // ALIGN) * ALIGN for e in entries), 1)
        specs = [("head", (1,), HEAD, HOST), ("readers", (MAX_READERS,), READER, HOST)]
        specs += [(f"w{k}", (size,), "uint8") for k in range(SLOTS)] + log_specs(tables_, SLOTS)
        meta = {"kind": KIND, "format": FORMAT, "entries": entries, "tables": tables_, "pid": os.getpid()}
        arena = Arena.create(Layout.build(specs, device), "w", meta)
        self._bind(arena, meta)
        self.history = History(self.tables, SLOTS)
        self.head["publisher_pid"] = os.getpid()
        self.model = model
        self._finalizer = weakref.finalize(self, _close, arena, self.head)

    def publish(self, model: torch.nn.Module | None = None, rows: dict[str, Any] | None = None) -> int:
        """Copy the weights of ``model`` (default: the one given to :func:`publish`) as version v+1;
        returns v+1. Never waits for a reader. ``rows``: per table, the rows changed since the
        previous publish (the others are taken as unchanged): only those are copied when the slot's
        history allows (:mod:`shmopt.weight_rows`)."""
        if not self._finalizer.alive:
            raise PublisherGone(f"weights {self.name} are closed")
        state = _state(model if model is not None else self.model, self.entries, "publish")
        now = self.history.changed(rows)
        head, v = self.head, self.version + 1
        k = v % SLOTS
        copy_rows = self.history.to_copy(now, v > SLOTS and int(head["slot_version"][k]) == v - SLOTS)
        head["seq"][k] += 1                        # odd: this slot is being written
        try:
            if self.group is None or self._rank() == self.src:
                slot = self.slots_[k]
                with torch.no_grad():
                    for name, t in state.items():
                        if (idx := copy_rows.get(name)) is None:
                            slot[name].copy_(t)
                        else:
                            slot[name].index_copy_(0, idx.to(slot[name].device),
                                                   t.index_select(0, idx.to(t.device)).to(slot[name].device))
            self.log.write(k, now if self.group is None else {})
            self.fence()
            if self.group is not None:             # the learner's node's bytes, into every node's slot
                dist.broadcast(self.arena.tensor(f"w{k}"), self.src, group=self.group)
            head["slot_version"][k] = v
        except BaseException:
            head["slot_version"][k] = 0            # half written: no reader may take it
            raise
        finally:
            head["seq"][k] += 1
        head["version"], head["t_publish"] = v, time.time()
        return v

    @property
    def handle(self) -> ArenaHandle:
        """What a reader in another process attaches to when the slots are on a GPU (picklable)."""
        return self.arena.handle

    def _rank(self) -> int:
        return dist.get_rank(self.group)

    def readers(self) -> list[dict[str, Any]]:
        """Every live reader: pid, the version it last read, its staleness, reads, when it read."""
        rows, newest = self.arena.array("readers").copy(), self.version
        return [{"pid": int(r["pid"]), "version": int(r["version"]), "staleness": newest - int(r["version"]),
                 "reads": int(r["reads"]), "t_read": float(r["t_read"])}
                for r in rows if r["pid"] and pid_alive(int(r["pid"]))]

    def close(self) -> None:
        """Mark the weights closed (readers raise PublisherGone) and remove the arena. Idempotent."""
        self._finalizer()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close(arena: Arena, head: np.void) -> None:
    try:
        head["closed"] = 1
    finally:
        arena.close(unlink=True)


class Reader(_Weights):
    """An actor's side (see the module text)."""

    def __init__(self, name: str | ArenaHandle) -> None:
        try:
            arena, meta = _open(name)
        except (FileNotFoundError, LookupError) as exc:
            raise PublisherGone(f"no published weights named {name!r} (is the publisher running?)") from exc
        except ValueError:
            raise ConfigError(f"{name!r} is not the name of published weights (publisher.name)") from None
        if meta.get("kind") != KIND or meta.get("format") != FORMAT:
            arena.close(unlink=False)
            raise ConfigError(f"shared-memory segment {name} holds no published weights")
        self._bind(arena, meta)
        self._held: tuple[Any, int] = (None, 0)     # the model this reader last filled, its version
        self.rows_only = 0                          # reads that copied only the tables' changed rows
        self._slot = self._claim()
        self._finalizer = weakref.finalize(self, _release, arena, self._slot)

    def _claim(self) -> np.void:
        rows, me = self.arena.array("readers"), os.getpid()
        for _ in range(3):                       # two readers may write one free slot: the last wins
            for r in rows:
                pid = int(r["pid"])
                if pid == 0 or (pid != me and not pid_alive(pid)):
                    r["pid"], r["version"], r["reads"] = me, 0, 0
                    time.sleep(0.001)
                    if int(r["pid"]) == me:
                        return r
                    break
        raise ConfigError(f"weights {self.name}: all {MAX_READERS} reader slots are taken")

    def _alive(self) -> None:
        if self.head["closed"] or not pid_alive(int(self.head["publisher_pid"])):
            pid = int(self.head["publisher_pid"])
            raise PublisherGone(f"the publisher of weights {self.name} (pid {pid}) is gone; newest version "
                                f"{self.version}")

    def _copy(self, state: dict[str, torch.Tensor], held: int | None) -> int | None:
        """One try: the newest version copied into ``state`` (only its changed rows of the tables
        when ``state`` holds version ``held`` = v - 1), or None if it was overwritten meanwhile."""
        head = self.head
        v = int(head["version"])
        if v == 0:
            return None
        k = v % SLOTS
        seq = int(head["seq"][k])
        if seq & 1 or int(head["slot_version"][k]) != v:
            return None
        slot = self.slots_[k]
        rows = self.log.read(k) if held == v - 1 else None
        with torch.no_grad():
            for name, t in state.items():
                if rows is None or name not in rows:
                    t.copy_(slot[name])
                elif rows[name].numel():
                    src = slot[name].index_select(0, rows[name].to(slot[name].device))
                    t.index_copy_(0, rows[name].to(t.device), src.to(t.device))
        self.fence()                            # the copies are done before the slot is checked again
        for device in {t.device for t in state.values() if t.device.type != "cpu"}:
            fence_for(device)()
        if int(head["seq"][k]) != seq:
            return None
        self.rows_only += rows is not None
        return v

    def read_into(self, model: torch.nn.Module, min_version: int = 1, timeout: float | None = None,
                  delta: bool = False) -> int:
        """Copy the newest complete version (at least ``min_version``) into ``model``; its version.

        Waits for it up to ``timeout`` seconds (None: no limit): TimeoutError naming both versions;
        PublisherGone when the publisher closed or died meanwhile. ``delta``: ``model`` is the
        object this reader last filled, unchanged since; if that was the previous version, only the
        tables' changed rows are copied (:mod:`shmopt.weight_rows`)."""
        checks.integer("min_version", min_version, 1)
        state = _state(model, self.entries, "read_into")
        held = self._held[1] if delta and self._held[0] is model else None
        deadline = None if timeout is None else time.monotonic() + checks.number("timeout", timeout, ge=0.0)
        pause = 0.0001
        while True:
            v = self._copy(state, held) if self.version >= min_version else None
            if v is not None and v >= min_version:
                self._held = (model, v)
                self._slot["version"], self._slot["t_read"] = v, time.time()
                self._slot["reads"] += 1
                return v
            self._alive()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"weights {self.name}: version {min_version} was not published within "
                                   f"{timeout} s (newest: {self.version})")
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def close(self) -> None:
        """Free this reader's slot and detach. Idempotent."""
        self._finalizer()


def _open(name: str | ArenaHandle) -> tuple[Arena, dict]:
    """The weights' arena by name (host slots) or by handle (slots on a GPU: CUDA IPC)."""
    if isinstance(name, str):
        return Arena.open(name)
    arena = Arena.attach(name)
    found = read_trailer(arena.storage.host_buffer())
    if found is None:
        arena.close(unlink=False)
        raise LookupError("the handle's arena carries no description")
    return arena, found[1]


def _release(arena: Arena, slot: np.void) -> None:
    try:
        slot["pid"] = 0
    finally:
        arena.close(unlink=False)


def publish(model: torch.nn.Module, group: Any = None, src: int = 0, tables: tuple[str, ...] | None = None,
            device: str = "cpu") -> Publisher:
    """A :class:`Publisher` of ``model``'s weights, with its initial weights as version 1.

    Across machines, ``group`` and ``src``: every node calls it, and then
    :meth:`Publisher.publish`, together; version 1 holds rank ``src``'s weights everywhere.
    ``tables``: the state_dict names published by rows (default: sparse embeddings).
    ``device="cuda"``: the slots on that GPU, read by other processes (other GPUs) through CUDA IPC
    (attach by ``publisher.handle``)."""
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"publish needs a torch.nn.Module, got {type(model).__name__}")
    pub = Publisher(model, group, src, tables, device)
    pub.publish()
    return pub


def attach(name: str | ArenaHandle) -> Reader:
    """A :class:`Reader` of the weights published under ``name`` (``publisher.name``; slots on a
    GPU: ``publisher.handle``, passed to the reader's process)."""
    if not (isinstance(name, str) and name) and not isinstance(name, ArenaHandle):
        raise ConfigError(f"attach needs the publisher's name (publisher.name) or handle, got {name!r}")
    return Reader(name)
