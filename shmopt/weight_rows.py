"""Sparse tables in versioned weights (:mod:`shmopt.weights`): publish and read only the rows that
changed.

A table is a state_dict entry of two or more dimensions that is named when the weights are
published (``tables=``; by default the weights of ``nn.Embedding``/``nn.EmbeddingBag`` modules
built with ``sparse=True``). ``publisher.publish(rows={name: indices})`` says which rows of a
table changed since the previous publish.

* **Publishing.** Version v goes into slot v mod S, which holds version v - S. When the rows
  changed in each of the versions v-S+1 .. v are known, only their union is copied, not the table.
* **Reading.** Each slot keeps the rows its version changed (its *log*: up to ``capacity`` rows per
  table, else "all"). ``read_into(model, delta=True)`` into the model this reader last filled with
  version v-1, unchanged since, copies the dense entries and only the rows of version v's log.
  Otherwise it copies everything.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from .errors import ConfigError
from .memory.layout import HOST

__all__ = ["default_tables", "RowLog", "History"]

#: rows a slot's log keeps per table (at least; a table's rows / LOG_SHARE if larger)
MIN_LOG, LOG_SHARE = 4096, 8
ALL = -1


def default_tables(model: torch.nn.Module) -> tuple[str, ...]:
    """The weights of the model's sparse embedding modules, by state_dict name."""
    return tuple(f"{prefix}.weight" if prefix else "weight" for prefix, m in model.named_modules()
                 if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and m.sparse)


def check_tables(tables: tuple[str, ...], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of ``tables`` (ConfigError for a name that is not a 2-D+ entry)."""
    by_name = {e["name"]: e for e in entries}
    out = []
    for name in tables:
        e = by_name.get(name)
        if e is None or len(e["shape"]) < 2:
            raise ConfigError(f"tables: {name!r} is not a state_dict entry of two or more dimensions "
                              f"(a table of rows)")
        out.append({"name": name, "rows": e["shape"][0],
                    "capacity": min(e["shape"][0], max(MIN_LOG, e["shape"][0] // LOG_SHARE))})
    return out


def specs(tables: list[dict[str, Any]], slots: int) -> list[tuple]:
    """The logs' arena buffers: per slot and table the rows, and the counts (ALL: every row)."""
    out = [(f"log{k}_{i}", (t["capacity"],), "int64", HOST)
           for k in range(slots) for i, t in enumerate(tables)]
    return out + ([("logn", (slots, len(tables)), "int64", HOST)] if tables else [])


class RowLog:
    """The logs of an arena, by slot and table name."""

    def __init__(self, arena, tables: list[dict[str, Any]], slots: int) -> None:
        self.tables = tables
        self.count = arena.tensor("logn") if tables else None
        self.rows = [{t["name"]: arena.tensor(f"log{k}_{i}") for i, t in enumerate(tables)}
                     for k in range(slots)]

    def write(self, k: int, changed: dict[str, torch.Tensor | None]) -> None:
        """Slot k's log: the rows its new version changed (None: all, or too many to keep)."""
        for i, t in enumerate(self.tables):
            idx = changed.get(t["name"])
            if idx is None or idx.numel() > t["capacity"]:
                self.count[k, i] = ALL
            else:
                self.rows[k][t["name"]][:idx.numel()] = idx
                self.count[k, i] = idx.numel()

    def read(self, k: int) -> dict[str, torch.Tensor] | None:
        """Slot k's changed rows per table, or None when some table's are not all known."""
        if self.count is None:
            return {}
        counts = self.count[k].tolist()
        if any(c == ALL for c in counts):
            return None
        return {t["name"]: self.rows[k][t["name"]][:c].clone() for t, c in zip(self.tables, counts)}


class History:
    """The publisher's memory of the rows changed by its last ``slots - 1`` publishes."""

    def __init__(self, tables: list[dict[str, Any]], slots: int) -> None:
        self.names = {t["name"]: t["rows"] for t in tables}
        self.past: deque[dict[str, torch.Tensor | None]] = deque(maxlen=slots - 1)

    def changed(self, rows: dict[str, Any] | None) -> dict[str, torch.Tensor | None]:
        """This publish's changed rows per table (None: all), checked."""
        rows = rows or {}
        unknown = [n for n in rows if n not in self.names]
        if unknown:
            raise ConfigError(f"rows: {unknown[0]!r} is not one of the published tables {sorted(self.names)}")
        out: dict[str, torch.Tensor | None] = {}
        for name, n in self.names.items():
            idx = rows.get(name)
            if idx is not None:
                idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
                idx = idx.to(torch.int64).reshape(-1).unique()
                if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= n):
                    raise ConfigError(f"rows[{name!r}]: row indices must be in 0..{n - 1}")
            out[name] = idx
        return out

    def to_copy(self, now: dict[str, torch.Tensor | None],
                slot_current: bool) -> dict[str, torch.Tensor | None]:
        """Rows to copy into a slot that holds the version ``slots`` publishes back (``slot_current``),
        per table: the union of the last publishes' and this one's, or None (the whole table)."""
        out: dict[str, torch.Tensor | None] = {}
        full = not slot_current or len(self.past) < (self.past.maxlen or 0)
        for name in self.names:
            parts = [p[name] for p in self.past] + [now[name]]
            out[name] = None if full or any(p is None for p in parts) else torch.cat(parts).unique()
        self.past.append(now)
        return out
