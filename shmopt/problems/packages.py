"""Data packages: real data sets that a system package ships, fetched into shmopt's data folder.

A :class:`DataPackage` names where the data comes from (a Debian package, got with
``apt-get download`` and unpacked with ``dpkg-deb -x``, never installed), the SHA-256 digest of
the downloaded file, and the files to keep. :func:`fetch` downloads into a temporary folder
inside the data folder, checks the digest, and moves the kept files into ``DATA_DIR/NAME/`` only
at the end: a failed fetch leaves nothing half-written. The data folder is the ``data_dir``
given (``--data-dir``), else ``$SHMOPT_DATA_DIR``, else ``~/.cache/shmopt/data``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shmopt.errors import DataError

__all__ = ["DataPackage", "PACKAGES", "data_root", "package_dir", "is_present", "fetch", "get_package"]

ENV_VAR = "SHMOPT_DATA_DIR"


@dataclass(frozen=True)
class DataPackage:
    """A data set inside a Debian package: ``debian`` (name), ``version``, ``sha256`` of the
    ``.deb``, ``files`` (paths inside it, kept flat under ``DATA_DIR/name/``)."""

    name: str
    description: str
    debian: str
    version: str
    sha256: str
    files: tuple[str, ...]


PACKAGES: dict[str, DataPackage] = {p.name: p for p in (
    DataPackage(
        name="movielens",
        description="MovieLens ml-latest-small ratings (100,004; 671 users, 9,066 movies) in R's dslabs",
        debian="r-cran-dslabs",
        version="0.7.4-1",
        sha256="c3f93382c44d4581de9561792a87b110cb239c70771cac5ad63fa0a259e71ef3",
        files=("usr/lib/R/site-library/dslabs/data/Rdata.rdb",
               "usr/lib/R/site-library/dslabs/data/Rdata.rdx"),
    ),
)}


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir``, else ``$SHMOPT_DATA_DIR``, else ``~/.cache/shmopt/data``."""
    chosen = data_dir or os.environ.get(ENV_VAR)
    return (Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "shmopt" / "data").absolute()


def get_package(name: str) -> DataPackage:
    """The package called ``name`` (DataError naming the known ones otherwise)."""
    if name not in PACKAGES:
        raise DataError(f"unknown data package {name!r}; known: {', '.join(sorted(PACKAGES))}")
    return PACKAGES[name]


def package_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where package ``name``'s files are (or go): ``DATA_DIR/name``."""
    return data_root(data_dir) / get_package(name).name


def is_present(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether every kept file of package ``name`` is in its folder."""
    folder = package_dir(name, data_dir)
    return all((folder / Path(f).name).is_file() for f in get_package(name).files)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise DataError(f"{what} failed (exit {done.returncode}): {last}")


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Download package ``name``, check its digest, keep its files in ``DATA_DIR/name``; returns
    that folder. Raises :class:`DataError` (one line) with nothing left behind on any failure."""
    pkg = get_package(name)
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"data package {name!r} comes from Debian's {pkg.debian} and needs {tool}, "
                            f"which is not on PATH")
    root = data_root(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=root))
    except OSError as exc:
        raise DataError(f"cannot write into the data folder {root}: {exc.strerror}") from None
    try:
        _run(["apt-get", "download", f"{pkg.debian}={pkg.version}"], tmp,
             f"apt-get download {pkg.debian}={pkg.version}")
        debs = sorted(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise DataError(f"apt-get download {pkg.debian} gave {len(debs)} .deb files, expected 1")
        digest = _sha256(debs[0])
        if digest != pkg.sha256:
            raise DataError(f"{debs[0].name}: SHA-256 {digest} does not match the expected {pkg.sha256}")
        _run(["dpkg-deb", "-x", str(debs[0]), "tree"], tmp, f"dpkg-deb -x {debs[0].name}")
        staged = tmp / "out"
        staged.mkdir()
        for f in pkg.files:
            src = tmp / "tree" / f
            if not src.is_file():
                raise DataError(f"{debs[0].name} has no file {f}")
            shutil.move(str(src), str(staged / src.name))
        dest = root / pkg.name
        if dest.exists():
            dest.rename(tmp / "old")
        staged.rename(dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
