"""The checkpoint file writer (engine.staged_file): what it writes is what was given, its digest is
the file's, and it falls back to the page cache where O_DIRECT is refused."""
from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import zipfile

import pytest
import torch

from shmopt.engine import staged_file
from shmopt.engine.checkpoint import write_atomic
from shmopt.engine.checkpoint_files import file_digest
from shmopt.engine.staged_file import ALIGN, CHUNK, StagedFile


def _pieces() -> list[bytes]:
    """Writes of every shape a torch.save makes: small headers, a buffer's bytes in one write
    larger than the staging buffer, a write that ends mid-block."""
    g = torch.Generator().manual_seed(0)
    big = torch.randint(0, 256, (2 * CHUNK + 3 * ALIGN + 7,), dtype=torch.uint8, generator=g)
    return [b"PK\x03\x04", bytes(range(200)), big.numpy().tobytes(), b"x" * (ALIGN - 1), b"tail"]


def _write(tmp_path, pieces: list[bytes]) -> tuple[str, str, StagedFile]:
    fd, path = tempfile.mkstemp(dir=tmp_path)
    out = StagedFile(fd)
    try:
        for p in pieces:
            assert out.write(memoryview(p)) == len(p)
        digest = out.finish()
    finally:
        out.close()
    return path, digest, out


def test_the_file_holds_every_byte_written_and_its_digest_is_the_files(tmp_path):
    pieces = _pieces()
    path, digest, _ = _write(tmp_path, pieces)
    with open(path, "rb") as f:
        assert f.read() == b"".join(pieces)
    assert digest == file_digest(path)


@pytest.mark.parametrize("size", [0, 1, ALIGN, CHUNK, CHUNK + 1, 3 * CHUNK - ALIGN + 5])
def test_a_checkpoint_of_any_size_loads_back_and_matches_its_digest(tmp_path, size):
    t = torch.arange(size, dtype=torch.int64).to(torch.uint8)
    path = str(tmp_path / "x.ckpt")
    digest = write_atomic(path, {"x": t, "meta": {"size": size}})
    assert digest == file_digest(path)
    back = torch.load(path, weights_only=True)
    assert torch.equal(back["x"], t) and back["meta"] == {"size": size}
    assert os.listdir(tmp_path) == ["x.ckpt"]


def test_a_refused_direct_write_goes_on_through_the_page_cache(tmp_path, monkeypatch):
    real_write, refused = os.write, []

    def refusing(fd, data):
        if staged_file.O_DIRECT & fcntl.fcntl(fd, fcntl.F_GETFL):
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(staged_file.os, "write", refusing)
    pieces = _pieces()
    path, digest, out = _write(tmp_path, pieces)
    with open(path, "rb") as f:
        assert f.read() == b"".join(pieces)
    assert digest == file_digest(path) and not out.direct
    if staged_file.O_DIRECT:                       # Linux: the first direct write was refused
        assert refused


def test_another_write_error_is_raised_and_nothing_is_left(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(staged_file.os, "write", full)
    path = str(tmp_path / "x.ckpt")
    with pytest.raises(OSError) as err:
        write_atomic(path, {"x": torch.zeros(CHUNK // 4)})
    assert err.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(torch.serialization, "set_crc32_options"), reason="torch < 2.6")
def test_a_checkpoint_skips_the_zip_crc_and_leaves_torchs_option_as_it_was(tmp_path):
    path = str(tmp_path / "x.ckpt")
    assert torch.serialization.get_crc32_options()
    write_atomic(path, {"x": torch.arange(1000)})
    assert torch.serialization.get_crc32_options()            # restored for the user's own saves
    with zipfile.ZipFile(path) as z:                           # the SHA-256 covers every record
        assert all(i.CRC == 0 for i in z.infolist())
    torch.save({"x": torch.arange(1000)}, str(tmp_path / "user.pt"))
    with zipfile.ZipFile(tmp_path / "user.pt") as z:
        assert any(i.CRC != 0 for i in z.infolist())
