"""Data packages (``shmopt data``), the R serialisation reader and the ``movielens-mf`` problem.

The reader is always tested on R serialisations written byte by byte here; the real package is
fetched with apt-get where apt-get is (CI has it), else those tests are skipped saying so."""
from __future__ import annotations

import gzip
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import run_main

from shmopt.errors import DataError, ProblemError
from shmopt.problems import load_problem, packages
from shmopt.problems.movielens import load_ratings
from shmopt.problems.rdata import NA_INTEGER, data_frame, read_lazyload, read_serialized

HAS_APT = shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None


# ------------------------------------------------------------------ an XDR writer for the tests
class XDR:
    """Writes R's XDR serialisation (version 3) of the few kinds a data.frame holds."""

    def __init__(self) -> None:
        self.symbols: list[str] = []

    @staticmethod
    def i4(*values: int) -> bytes:
        return struct.pack(f">{len(values)}i", *values)

    def char(self, s: str | None) -> bytes:
        if s is None:
            return self.i4(9, -1)
        b = s.encode()
        return self.i4(9 | (1 << 3) << 12, len(b)) + b       # CHARSXP marked UTF-8

    def sym(self, name: str) -> bytes:
        if name in self.symbols:                              # second use: a reference
            return self.i4(((self.symbols.index(name) + 1) << 8) | 255)
        self.symbols.append(name)
        return self.i4(1) + self.char(name)

    def attrs(self, pairs: list[tuple[str, bytes]]) -> bytes:
        out = b"".join(self.i4(2 | 1 << 10) + self.sym(tag) + value for tag, value in pairs)
        return out + self.i4(254)

    def vector(self, kind: int, payload: bytes, n: int, attrs: list[tuple[str, bytes]] | None = None,
               obj: bool = False) -> bytes:
        flags = kind | (obj << 8) | (bool(attrs) << 9)
        return self.i4(flags, n) + payload + (self.attrs(attrs) if attrs else b"")

    def ints(self, values: list[int], attrs=None, obj=False) -> bytes:
        return self.vector(13, self.i4(*values), len(values), attrs, obj)

    def reals(self, values: list[float]) -> bytes:
        return self.vector(14, struct.pack(f">{len(values)}d", *values), len(values))

    def strings(self, values: list[str | None]) -> bytes:
        return self.vector(16, b"".join(self.char(v) for v in values), len(values))

    def compact_intseq(self, n: int, start: int) -> bytes:
        info = (self.i4(2) + self.sym("compact_intseq") + self.i4(2) + self.sym("base") + self.i4(2)
                + self.ints([13]) + self.i4(254))
        return self.i4(238) + info + self.reals([n, start, 1]) + self.i4(254)

    def data_frame(self, columns: dict[str, bytes], n: int) -> bytes:
        body = b"".join(columns.values())
        attrs = [("names", self.strings(list(columns))), ("class", self.strings(["data.frame"])),
                 ("row.names", self.compact_intseq(n, 1))]
        return self.vector(19, body, len(columns), attrs, obj=True)

    @staticmethod
    def header(body: bytes) -> bytes:
        return b"X\n" + XDR.i4(3, 0x040100, 0x030500, 5) + b"UTF-8" + body


def tiny_frame(w: XDR) -> bytes:
    factor = w.ints([2, 1, NA_INTEGER], attrs=[("levels", w.strings(["Drama", "Comedy"])),
                                               ("class", w.strings(["factor"]))], obj=True)
    return w.data_frame({"userId": w.ints([1, 1, 2]), "rating": w.reals([4.0, 3.5, 5.0]),
                         "title": w.strings(["Heat", None, "Up"]), "genres": factor,
                         "movieId": w.ints([10, 20, 10])}, 3)


def write_lazyload(folder: Path, objects: dict[str, bytes]) -> Path:
    """An R lazy-load database (Rdata.rdb + Rdata.rdx) of these serialised objects."""
    w, blobs, entries = XDR(), b"", []
    for data in objects.values():
        blob = struct.pack(">I", len(data)) + zlib.compress(data)
        entries.append(w.ints([len(blobs), len(blob)]))
        blobs += blob
    variables = w.vector(19, b"".join(entries), len(entries), [("names", w.strings(list(objects)))])
    index = w.vector(19, variables + w.vector(19, b"", 0) + w.ints([1]), 3,
                     [("names", w.strings(["variables", "references", "compressed"]))])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Rdata.rdb").write_bytes(blobs)
    (folder / "Rdata.rdx").write_bytes(gzip.compress(XDR.header(index)))
    return folder / "Rdata.rdb"


# ------------------------------------------------------------------ the reader
def test_reader_reads_a_handwritten_data_frame():
    df = data_frame(read_serialized(XDR.header(tiny_frame(XDR()))))
    assert list(df) == ["userId", "rating", "title", "genres", "movieId"]
    assert df["userId"].tolist() == [1, 1, 2] and df["rating"].tolist() == [4.0, 3.5, 5.0]
    assert df["title"].tolist() == ["Heat", None, "Up"]
    assert df["genres"].tolist() == ["Comedy", "Drama", None]


def test_reader_reads_a_lazyload_database_and_names_what_is_missing(tmp_path):
    w = XDR()
    rdb = write_lazyload(tmp_path, {"other": XDR.header(w.ints([7])), "movielens": XDR.header(tiny_frame(XDR()))})
    assert read_lazyload(rdb, "other").value.tolist() == [7]
    assert data_frame(read_lazyload(rdb, "movielens"))["movieId"].tolist() == [10, 20, 10]
    with pytest.raises(DataError, match="has no object 'nope'; it has movielens, other"):
        read_lazyload(rdb, "nope")
    with pytest.raises(DataError, match="not the XDR format"):
        read_serialized(b"A\n" + bytes(20))


# ------------------------------------------------------------------ the packages and `shmopt data`
def test_unknown_package_and_missing_apt_get_exit_2_leaving_nothing(tmp_path, capsys, monkeypatch):
    code, _, err = run_main(["data", "fetch", "nope", "--data-dir", str(tmp_path / "d")], capsys)
    assert code == 2 and err.strip() == ("shmopt: error: unknown data package 'nope'; known: brown, fashion-mnist, "
                                         "janeausten, movielens, spam-assassin, word-tests, wordnet")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = run_main(["data", "fetch", "movielens", "--data-dir", str(tmp_path / "d")], capsys)
    assert code == 2 and "needs apt-get, which is not on PATH" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_data_list_says_missing_and_run_without_data_exits_2(tmp_path, capsys):
    code, out, _ = run_main(["data", "list", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and f"movielens      missing  {tmp_path / 'movielens'}" in out
    code, _, err = run_main(["run", "movielens-mf", "--data-dir", str(tmp_path), "--algo", "hogwild",
                             "-w", "1", "--steps", "1"], capsys)
    assert code == 2 and err.strip() == (f"shmopt: error: movielens data not found in {tmp_path / 'movielens'}: "
                                         "run `shmopt data fetch movielens` (or -o path=...)")


@pytest.mark.skipif(not HAS_APT, reason="apt-get/dpkg-deb not on PATH (a Debian system is needed to fetch)")
def test_digest_mismatch_exits_2_leaving_nothing(tmp_path, capsys, monkeypatch):
    wrong = packages.DataPackage(**{**packages.PACKAGES["movielens"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(packages.PACKAGES, "movielens", wrong)
    code, _, err = run_main(["data", "fetch", "movielens", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "does not match the expected 000" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the problem
def test_movielens_mf_on_a_small_database(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    w = XDR()
    frame = w.data_frame({"userId": w.ints(rng.integers(1, 30, n).tolist()),
                          "movieId": w.ints((rng.integers(1, 50, n) * 7).tolist()),
                          "rating": w.reals((rng.integers(1, 11, n) / 2).tolist())}, n)
    rdb = write_lazyload(tmp_path / "own", {"movielens": XDR.header(frame)})
    p = load_problem("movielens-mf", path=str(rdb), dim=4, batch_size=16)
    p.validate()
    assert p.num_train == 360 and len(p.eval[1]) == 40
    assert {name for name, _, _ in p.sparse_parameters} == {"user.weight", "item.weight",
                                                            "user_bias.weight", "item_bias.weight"}
    assert set(p.metric_names(p.model())) == {"rmse"}
    with pytest.raises(ProblemError, match="is not a file"):
        load_problem("movielens-mf", path=str(tmp_path / "none.rdb"))


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    if not HAS_APT:
        pytest.skip("apt-get/dpkg-deb not on PATH: cannot fetch Debian's r-cran-dslabs")
    root = tmp_path_factory.mktemp("data")
    packages.fetch("movielens", root)
    return root


def test_fetch_keeps_the_two_files_and_list_shows_them(fetched, capsys):
    assert sorted(p.name for p in (fetched / "movielens").iterdir()) == ["Rdata.rdb", "Rdata.rdx"]
    assert [p.name for p in fetched.iterdir()] == ["movielens"]          # no temporary left
    code, out, _ = run_main(["data", "list", "--data-dir", str(fetched)], capsys)
    assert code == 0 and f"movielens      present  {fetched / 'movielens'}" in out


def test_the_real_movielens_frame(fetched):
    df = load_ratings(fetched / "movielens" / "Rdata.rdb")
    assert list(df) == ["movieId", "title", "year", "genres", "userId", "rating", "timestamp"]
    assert len(df["rating"]) == 100_004
    assert len(np.unique(df["userId"])) == 671 and len(np.unique(df["movieId"])) == 9_066
    assert df["rating"].mean() == pytest.approx(3.544, abs=5e-4)
    p = load_problem("movielens-mf", data_dir=str(fetched))
    assert p.num_train == 90_003 and len(p.eval[1]) == 10_001
