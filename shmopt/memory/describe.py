"""A self-description at the end of an arena's host block, so that a process holding no handle
(``shmopt top``) can learn the layout of a running arena from its name alone.

The owner passes a JSON-able ``describe`` dict to :meth:`~shmopt.memory.Arena.create`; the block
is then made ``len(trailer)`` bytes longer than the layout's host region and the trailer is
written past every buffer, so no offset, no view and no handle of the layout changes::

    [ buffers of the layout ... | JSON (utf-8) | length: u64 little-endian | MAGIC (8 bytes) ]

The JSON holds ``{"layout": <the Layout>, "meta": <describe>}``; a reader takes the last 16
bytes of the block, checks the magic and reads the JSON before them. A block without the magic
(another owner, or an owner still writing it) has no description: :func:`read_trailer` gives None.
"""
from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from .layout import Entry, Layout

MAGIC = b"shmoptD1"
_FOOT = struct.Struct("<Q8s")
MAX_JSON = 1 << 20


def dtype_to_json(dt: np.dtype) -> Any:
    """A JSON-able form of a numpy dtype (structured ones keep names, offsets and padding)."""
    if dt.fields is not None:
        names = list(dt.names)
        return {"names": names, "formats": [dtype_to_json(dt.fields[n][0]) for n in names],
                "offsets": [int(dt.fields[n][1]) for n in names], "itemsize": int(dt.itemsize)}
    if dt.subdtype is not None:
        return [dtype_to_json(dt.subdtype[0]), list(dt.subdtype[1])]
    return dt.str


def dtype_from_json(obj: Any) -> np.dtype:
    """Inverse of :func:`dtype_to_json`."""
    if isinstance(obj, dict):
        return np.dtype({"names": obj["names"], "formats": [dtype_from_json(f) for f in obj["formats"]],
                         "offsets": obj["offsets"], "itemsize": obj["itemsize"]})
    if isinstance(obj, list):
        return np.dtype((dtype_from_json(obj[0]), tuple(obj[1])))
    return np.dtype(obj)


def layout_to_json(layout: Layout) -> dict:
    return {"device": layout.device, "regions": [[r, n] for r, n in layout.regions],
            "entries": [{"name": e.name, "shape": list(e.shape), "dtype": dtype_to_json(e.dtype),
                         "placement": e.placement, "region": e.region, "offset": e.offset}
                        for e in layout.entries]}


def layout_from_json(obj: dict) -> Layout:
    entries = tuple(Entry(e["name"], tuple(e["shape"]), dtype_from_json(e["dtype"]), e["placement"],
                          e["region"], int(e["offset"])) for e in obj["entries"])
    return Layout(entries, tuple((r, int(n)) for r, n in obj["regions"]), obj["device"])


def make_trailer(layout: Layout, meta: dict) -> bytes:
    """The bytes appended to the host block (raises TypeError/ValueError for non-JSON meta)."""
    body = json.dumps({"layout": layout_to_json(layout), "meta": meta}, allow_nan=False).encode()
    if len(body) > MAX_JSON:
        raise ValueError(f"arena description too large ({len(body)} bytes > {MAX_JSON})")
    return body + _FOOT.pack(len(body), MAGIC)


def read_trailer(buf: memoryview | bytes) -> tuple[Layout, dict] | None:
    """(layout, meta) from a host block, or None where it carries no (complete) description."""
    size = len(buf)
    if size < _FOOT.size:
        return None
    length, magic = _FOOT.unpack(bytes(buf[size - _FOOT.size:]))
    if magic != MAGIC or length > min(MAX_JSON, size - _FOOT.size):
        return None
    start = size - _FOOT.size - length
    try:
        doc = json.loads(bytes(buf[start:start + length]).decode())
        return layout_from_json(doc["layout"]), doc["meta"]
    except (ValueError, KeyError, TypeError):
        return None
