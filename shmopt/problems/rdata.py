"""A minimal reader of R's serialisation (XDR, versions 2 and 3) and of R's lazy-load databases
(``Rdata.rdb`` + ``Rdata.rdx``, the data of an installed R package), without R.

It reads what data frames hold: integer, logical, double and character vectors, lists, pairlists
of attributes, symbols, references, and the compact ALTREP forms R writes for them
(``compact_intseq``, ``compact_realseq``, ``wrap_*``, ``deferred_string``). Anything else (closures,
environments' contents, bytecode) raises :class:`~shmopt.errors.DataError`.

* ``.rdx``: a gzip (or 4-byte length + zlib) R serialisation of a list whose ``variables`` maps
  each object's name to ``(offset, length)`` in the ``.rdb``;
* ``.rdb``: at each offset, a big-endian 4-byte uncompressed length + a zlib stream of the
  object's serialisation.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shmopt.errors import DataError

__all__ = ["RObject", "read_serialized", "read_lazyload", "data_frame", "NA_INTEGER"]

NA_INTEGER = -(2**31)
_NIL, _GLOBAL, _UNBOUND, _MISSING, _BASENS, _EMPTY, _BASEENV = 254, 253, 252, 251, 250, 242, 241
_REF, _ALTREP, _ATTRLIST, _ATTRLANG, _NAMESPACE, _PACKAGE, _PERSIST = 255, 238, 239, 240, 249, 248, 247
_SYM, _LIST, _CLO, _ENV, _PROM, _LANG, _CHAR = 1, 2, 3, 4, 5, 6, 9
_LGL, _INT, _REAL, _CPLX, _STR, _VEC, _EXPR = 10, 13, 14, 15, 16, 19, 20
_VECTORS = {_LGL: ">i4", _INT: ">i4", _REAL: ">f8", _CPLX: ">c16"}


@dataclass
class RObject:
    """An R value: ``kind`` (``"int"``, ``"lgl"``, ``"real"``, ``"cplx"``, ``"str"``, ``"list"``,
    ``"pairlist"``, ``"sym"``, ``"null"``, ``"env"``), ``value`` (a numpy array, a list of str or
    None, a list of RObjects, a symbol's name) and ``attrs`` (attribute name -> RObject)."""

    kind: str
    value: Any = None
    attrs: dict[str, RObject] = field(default_factory=dict)
    tags: list[str | None] = field(default_factory=list)   # a pairlist's tags

    def attr(self, name: str) -> Any:
        """The value of attribute ``name``, or None."""
        a = self.attrs.get(name)
        return None if a is None else a.value


_KINDS = {_LGL: "lgl", _INT: "int", _REAL: "real", _CPLX: "cplx"}
NULL = RObject("null")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.refs = data, 0, []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DataError("R serialisation: truncated data")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise DataError("R serialisation: not the XDR format (header 'X\\n' expected)")
        version = self.int()
        self.int(), self.int()                     # the writer's R version, the minimal reader's
        if version == 3:
            self.take(self.int())                  # native encoding name
        elif version != 2:
            raise DataError(f"R serialisation: format version {version} is not supported (2 or 3)")

    def string(self, flags: int) -> str | None:
        n = self.int()
        if n == -1:
            return None
        raw = self.take(n)
        return raw.decode("latin-1" if flags & (1 << 14) else "utf-8", errors="replace")

    def item(self) -> RObject:
        flags = self.int()
        t, has_attr = flags & 0xFF, bool(flags & (1 << 9))
        if t in (_NIL, _GLOBAL, _UNBOUND, _MISSING, _BASENS, _EMPTY, _BASEENV):
            return NULL if t == _NIL else RObject("env")
        if t == _REF:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if t == _SYM:
            sym = RObject("sym", self.item().value)
            self.refs.append(sym)
            return sym
        if t in (_NAMESPACE, _PACKAGE, _PERSIST):
            self.int()                             # 0, then the names as CHARSXPs
            obj = RObject("env", [self.item().value for _ in range(self.length())])
            self.refs.append(obj)
            return obj
        if t == _ENV:
            obj = RObject("env")
            self.refs.append(obj)
            self.int()                             # locked
            for _ in range(4):                     # enclosure, frame, hash table, attributes
                self.item()
            return obj
        if t in (_LIST, _LANG, _CLO, _PROM, _ATTRLIST, _ATTRLANG):
            return self.pairlist(flags)
        if t == _ALTREP:
            return self.altrep()
        if t == _CHAR:
            return RObject("char", self.string(flags >> 12))
        if t in _VECTORS:
            n = self.length()
            size = np.dtype(_VECTORS[t]).itemsize
            arr = np.frombuffer(self.take(n * size), dtype=_VECTORS[t]).astype(_VECTORS[t][1:])
            obj = RObject(_KINDS[t], arr)
        elif t == _STR:
            n = self.length()
            obj = RObject("str", [self.item().value for _ in range(n)])
        elif t in (_VEC, _EXPR):
            n = self.length()
            obj = RObject("list", [self.item() for _ in range(n)])
        else:
            raise DataError(f"R serialisation: object type {t} is not supported by this reader")
        if has_attr:
            obj.attrs = self.attributes()
        return obj

    def pairlist(self, flags: int) -> RObject:
        out = RObject("pairlist", [])
        while True:
            attrs = self.attributes() if flags & (1 << 9) else {}
            tag = self.item().value if flags & (1 << 10) else None
            out.value.append(self.item())
            out.tags.append(tag)
            out.attrs.update(attrs)
            flags = self.int()
            if flags & 0xFF == _NIL:
                return out
            if flags & 0xFF not in (_LIST, _LANG, _ATTRLIST, _ATTRLANG):
                self.pos -= 4                      # a dotted pair's tail: read it as an element
                out.value.append(self.item())
                out.tags.append(None)
                return out

    def attributes(self) -> dict[str, RObject]:
        pl = self.item()
        return dict(zip(pl.tags, pl.value)) if pl.kind == "pairlist" else {}

    def altrep(self) -> RObject:
        info, state, attrs = self.item(), self.item(), self.item()
        cls = info.value[0].value if info.kind == "pairlist" else None
        if cls == "compact_intseq":
            n, start, step = (int(v) for v in state.value)
            obj = RObject("int", np.arange(start, start + n * step, step, dtype=np.int32)[:n])
        elif cls == "compact_realseq":
            n, start, step = state.value
            obj = RObject("real", start + step * np.arange(int(n), dtype=np.float64))
        elif cls is not None and cls.startswith("wrap_"):
            obj = state.value[0]
        elif cls == "deferred_string":
            src = state.value[0]
            obj = RObject("str", [None if (src.kind == "int" and v == NA_INTEGER) or
                                  (src.kind == "real" and np.isnan(v)) else
                                  (str(int(v)) if src.kind == "int" else repr(float(v)))
                                  for v in src.value])
        else:
            raise DataError(f"R serialisation: ALTREP class {cls!r} is not supported by this reader")
        if attrs.kind == "pairlist":
            obj.attrs = dict(zip(attrs.tags, attrs.value))
        return obj


def read_serialized(data: bytes) -> RObject:
    """The R object of an (uncompressed) XDR serialisation, as ``serialize(x, NULL)`` writes it."""
    r = _Reader(data)
    r.header()
    return r.item()


def _inflate(blob: bytes, what: str) -> bytes:
    """A gzip file, or R's ``4-byte length + zlib stream`` form, uncompressed."""
    try:
        if blob[:2] == b"\x1f\x8b":
            return gzip.decompress(blob)
        if blob[4:5] in (b"2", b"X", b"Z", b"0"):
            raise DataError(f"{what}: only zlib-compressed objects are supported (type {blob[4:5]!r})")
        return zlib.decompress(blob[4:])
    except (OSError, zlib.error, EOFError) as exc:
        raise DataError(f"{what}: cannot uncompress ({exc})") from None


def read_lazyload(rdb: str | Path, name: str) -> RObject:
    """Object ``name`` of the lazy-load database ``rdb`` (``X.rdb`` next to its index ``X.rdx``)."""
    rdb = Path(rdb)
    rdx = rdb.with_suffix(".rdx")
    for p in (rdb, rdx):
        if not p.is_file():
            raise DataError(f"R lazy-load database: {p.name} not found next to {rdb.name}")
    index = read_serialized(_inflate(rdx.read_bytes(), rdx.name))
    tables = dict(zip(index.attr("names") or [], index.value))
    variables = tables.get("variables")
    if variables is None:
        raise DataError(f"{rdx.name}: not an R lazy-load index (no 'variables')")
    entries = dict(zip(variables.attr("names") or [], variables.value))
    if name not in entries:
        raise DataError(f"{rdb.name} has no object {name!r}; it has {', '.join(sorted(entries))}")
    offset, length = (int(v) for v in entries[name].value)
    with open(rdb, "rb") as f:
        f.seek(offset)
        blob = f.read(length)
    return read_serialized(_inflate(blob, f"{rdb.name}[{name}]"))


def data_frame(obj: RObject) -> dict[str, np.ndarray]:
    """The columns of an R data.frame: numeric columns as numpy arrays (integer NA is
    :data:`NA_INTEGER`, logicals as int32), character columns and factors as object arrays of
    str (None for NA)."""
    classes = obj.attr("class") or []
    if obj.kind != "list" or "data.frame" not in classes:
        raise DataError(f"R object is not a data.frame (class {classes})")
    out = {}
    for name, col in zip(obj.attr("names") or [], obj.value):
        if "factor" in (col.attr("class") or []):
            levels = np.array([None] + list(col.attr("levels") or []), dtype=object)
            codes = np.where(col.value == NA_INTEGER, 0, col.value)
            out[name] = levels[codes]
        elif col.kind == "str":
            out[name] = np.array(col.value, dtype=object)
        elif col.kind in ("int", "lgl", "real"):
            out[name] = col.value
        else:
            raise DataError(f"R data.frame column {name!r} of kind {col.kind} is not supported")
    return out
