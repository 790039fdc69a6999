"""Where checkpoints go: free space checked before the first step, the last ``--keep N`` kept, a
JSON sidecar beside each, and a full disk survived.

* **Up front.** A checkpoint's size is known before the first step: the arena's bytes that it
  holds, plus a margin. A folder without room for the new file is refused with one line, before
  any process starts. The new file is written beside the old one and then renamed over it.
* **Keep N.** The newest checkpoint is at PATH, older ones at PATH.1 ... PATH.N-1, each with its
  sidecar.
* **Sidecar** (``PATH.json``, written atomically after the checkpoint): updates, the last loss,
  the time, the configuration, the file's size and SHA-256. Readable without loading tensors; a
  resume checks the digest, so a truncated or corrupted file is refused even if it unpickles.
* **A full disk mid-run** (or any error writing the file): one line saying so. The previous
  checkpoint stays intact (the new one is a temporary file until renamed), training goes on, and
  the next checkpoint tries again. :attr:`CheckpointFiles.last_good` says where the last good one
  is.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from typing import Any

from .. import checks
from ..errors import ConfigError
from ..memory import Layout
from ..memory.shm import fmt_bytes, pid_alive

SIDECAR = ".json"
TEMP_PREFIX = ".shmopt-ckpt-"    # + the writer's pid: a killed writer's temporary file is recognised
MARGIN = 1.02                    # torch.save's zip records and the pickled metadata, over the bytes
MARGIN_BYTES = 1 << 20


def sidecar_of(path: str) -> str:
    return path + SIDECAR


def size_of(layout: Layout, skip: tuple[str, ...]) -> int:
    """The bytes a checkpoint of this arena takes, at most (margin included)."""
    body = sum(e.nbytes for e in layout.entries if e.name not in skip)
    return int(body * MARGIN) + MARGIN_BYTES


def check_space(path: str, nbytes: int, keep: int) -> None:
    """ConfigError when the checkpoint's folder cannot hold the files this run will write: the new
    one beside the old, and the older ones kept that are not there yet."""
    folder = os.path.dirname(os.path.abspath(path))
    existing = sum(os.path.exists(p) for p in rotation(path, keep))
    need = nbytes * (1 + max(0, keep - 1 - max(0, existing - 1)))
    free = shutil.disk_usage(folder).free
    if free < need:
        raise checks.invalid("checkpoint", path, f"its folder has {fmt_bytes(free)} free, and this run's "
                             f"checkpoints need {fmt_bytes(need)} ({fmt_bytes(nbytes)} each, --keep {keep})")


def rotation(path: str, keep: int) -> list[str]:
    """PATH, PATH.1, ..., PATH.(keep-1): newest first."""
    return [path] + [f"{path}.{i}" for i in range(1, keep)]


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def check_digest(path: str) -> None:
    """ConfigError when ``path`` does not match the digest its sidecar recorded (no sidecar: a
    checkpoint of an older shmopt, taken as it is)."""
    try:
        with open(sidecar_of(path), encoding="utf-8") as f:
            want = json.load(f).get("sha256")
    except (OSError, ValueError):
        return
    if want and file_digest(path) != want:
        raise ConfigError(f"checkpoint {path!r} does not match the digest in {sidecar_of(path)}: it is "
                          f"truncated or corrupted")


def _write_json(path: str, doc: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".shmopt-json-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class CheckpointFiles:
    """The run's checkpoint path, its rotation and its failures."""

    def __init__(self, path: str, keep: int) -> None:
        self.path, self.keep = path, keep
        #: (path, updates) of the last good checkpoint: this run's, or the one already there
        self.last_good: tuple[str, int | None] | None = None
        if os.path.isfile(path):
            try:
                with open(sidecar_of(path), encoding="utf-8") as f:
                    self.last_good = (path, json.load(f).get("updates"))
            except (OSError, ValueError):
                self.last_good = (path, None)
        self.failures = 0

    def sweep_temporaries(self) -> list[str]:
        """Remove what a killed writer left beside PATH: its new file, and temporary files of
        writers that are no longer alive (a live one's are left alone)."""
        folder, base = os.path.split(os.path.abspath(self.path))
        removed = []
        for name in os.listdir(folder):
            pid = name[len(TEMP_PREFIX):].split("-", 1)[0] if name.startswith(TEMP_PREFIX) else ""
            if name == f".{base}.new" or (pid.isdigit() and not pid_alive(int(pid))):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed.append(name)
                except OSError:
                    pass
        return removed

    def _rotate(self) -> None:
        files = rotation(self.path, self.keep)
        for older, newer in reversed(list(zip(files[1:], files[:-1]))):
            for suffix in ("", SIDECAR):
                if os.path.exists(newer + suffix):
                    os.replace(newer + suffix, older + suffix)

    def write(self, save, meta: dict[str, Any], final: bool = False) -> bool:
        """``save(target)`` writes a checkpoint at ``target`` atomically and returns its SHA-256:
        here a new file beside
        PATH, which only then (written whole) moves the older ones along and becomes PATH, followed
        by its sidecar. False (one warning line) when it could not be written: nothing moved."""
        folder, base = os.path.split(os.path.abspath(self.path))
        new = os.path.join(folder, f".{base}.new")
        try:
            digest = save(new)
            doc = {"updates": meta.get("updates"), "loss": meta.get("loss"), "time": time.time(),
                   "config": meta.get("config"), "bytes": os.path.getsize(new),
                   "sha256": digest,
                   "algo": meta.get("algo"), "workers": meta.get("workers")}
            if self.keep > 1 and os.path.exists(self.path):
                self._rotate()
            elif os.path.exists(sidecar_of(self.path)):
                os.unlink(sidecar_of(self.path))     # never a sidecar of the file being replaced
            os.replace(new, self.path)
            _write_json(sidecar_of(self.path), doc)
        except OSError as exc:
            if os.path.exists(new):
                os.unlink(new)
            self.failures += 1
            good = self.last_good
            where = ("no checkpoint was written yet" if good is None else
                     f"the last good one is {good[0]} (" + (f"update {good[1]})" if good[1] is not None
                                                             else "written before this run)"))
            what = "the final checkpoint" if final else "a checkpoint"
            warnings.warn(f"shmopt: {what} could not be written to {self.path} ({exc.strerror or exc}); "
                          f"{where}" + ("" if final else "; training goes on, the next one tries again"),
                          RuntimeWarning, stacklevel=3)
            return False
        self.last_good = (self.path, int(meta.get("updates") or 0))
        return True
