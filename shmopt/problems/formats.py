"""Readers for the two binary image formats users already have on disk (no pickle, no download).

* **IDX** (LeCun's MNIST format, also Fashion-MNIST's and torchvision's ``MNIST/raw`` folder):
  a big-endian header ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` uint32 sizes, then the
  data in row-major order; plain or gzipped (``.gz``).
* **CIFAR-10 binary version** (``cifar-10-batches-bin``): records of 1 label byte and 3072 pixel
  bytes (1024 red, 1024 green, 1024 blue, each 32x32 row-major), 10,000 records per batch file.

Both return numpy arrays; a malformed file raises :class:`~shmopt.errors.ProblemError` with the
path and what was expected.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import ProblemError

__all__ = ["read_idx", "write_idx", "read_cifar10_bin", "CIFAR_RECORD"]

#: IDX type code -> numpy dtype (big-endian where it matters)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: bytes per CIFAR-10 record: one label, 3 x 32 x 32 pixels
CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_bytes(path: str) -> bytes:
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise ProblemError(f"cannot read {path}: {exc}") from None


def read_idx(path: str) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` is decompressed)."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ProblemError(f"{path} is not an IDX file (it must start with 0x00 0x00, a type code "
                           f"in {sorted(_IDX_TYPES)} and a dimension count)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ProblemError(f"{path}: IDX header cut short ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = head + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != need:
        raise ProblemError(f"{path}: IDX shape {shape} of {dtype} needs {need} bytes, the file has "
                           f"{len(raw)}")
    return np.frombuffer(raw, dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


def map_idx(path: str) -> np.ndarray:
    """A copy-on-write map of an uncompressed one-byte (uint8, int8) IDX file: nothing is read, and
    ``torch.from_numpy`` of it trains without a copy (:mod:`.sources`). Others: :func:`read_idx`."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_TYPES or head[3] == 0:
            raise ProblemError(f"{path} is not an uncompressed IDX file (it must start with 0x00 0x00, a "
                               f"type code and a dimension count; read_idx reads .gz files)")
        dtype = np.dtype(_IDX_TYPES[head[2]])
        if dtype.itemsize != 1:
            raise ProblemError(f"{path} holds {dtype}: map_idx maps uint8 and int8 IDX files (their bytes "
                               f"need no reordering); read_idx reads the others")
        shape = tuple(int(s) for s in np.frombuffer(f.read(4 * head[3]), ">u4"))
    size, start = os.path.getsize(path), 4 + 4 * len(shape)
    if size != start + int(np.prod(shape)):
        raise ProblemError(f"{path}: IDX shape {shape} needs {start + int(np.prod(shape))} bytes, the file "
                           f"has {size}")
    return np.memmap(path, dtype=dtype, mode="c", offset=start, shape=shape)


def write_idx(path: str, array: np.ndarray) -> None:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64) as IDX (gzipped for .gz)."""
    kind = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if dtype not in kind:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    body = bytes([0, 0, kind[dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes() \
        + np.ascontiguousarray(array).astype(_IDX_TYPES[kind[dtype]]).tobytes()
    with (gzip.open(path, "wb") if path.endswith(".gz") else open(path, "wb")) as f:
        f.write(body)


def read_cifar10_bin(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 of shape (N, 3, 32, 32), labels int64 of shape (N,)) from batch files."""
    images, labels = [], []
    for path in paths:
        raw = _read_bytes(path)
        if not raw or len(raw) % CIFAR_RECORD:
            raise ProblemError(f"{path} is not a CIFAR-10 binary batch: {len(raw)} bytes is not a "
                               f"multiple of the {CIFAR_RECORD}-byte record (label + 3x32x32 pixels)")
        rec = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR_RECORD)
        if int(rec[:, 0].max()) > 9:
            raise ProblemError(f"{path}: label {int(rec[:, 0].max())} is not a CIFAR-10 class (0..9)")
        labels.append(rec[:, 0].astype(np.int64))
        images.append(rec[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def existing(folder: str, names: list[str]) -> list[str] | None:
    """The paths of ``names`` in ``folder`` (each may also be gzipped), or None if one is missing."""
    out = []
    for name in names:
        for candidate in (name, name + ".gz"):
            if os.path.isfile(os.path.join(folder, candidate)):
                out.append(os.path.join(folder, candidate))
                break
        else:
            return None
    return out
