"""Data sources: file regions recognised behind tensors, batches converted per batch, datasets read
per batch, and a sampler that goes on from a shared position."""
from __future__ import annotations

import os
import pickle
from functools import partial

import numpy as np
import pytest
import torch

from shmopt.errors import ProblemError
from shmopt.memory.filemap import DataFileError, region_of
from shmopt.problems import Problem
from shmopt.problems.builtin import linear_model
from shmopt.problems.dataset import EAGER_BELOW
from shmopt.problems.sources import DatasetRows, TensorRows
from shmopt.strategies.sampling import Sampler


@pytest.fixture
def npy(tmp_path):
    path = str(tmp_path / "x.npy")
    np.save(path, np.arange(600, dtype=np.uint8).reshape(100, 6) % 251)
    return path


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
@pytest.mark.parametrize("mode", ["r", "c"])
def test_a_view_of_a_file_map_is_a_file_region(npy, mode):
    t = torch.from_numpy(np.load(npy, mmap_mode=mode))[10:20]       # a view with an offset
    region = region_of(t)
    assert region is not None and region.path == npy and region.shape == (10, 6)
    back = pickle.loads(pickle.dumps(region))                        # what a worker gets
    assert torch.equal(back.take(torch.tensor([0, 9])), t[[0, 9]])


def test_memory_of_its_own_is_not_a_file_region(npy):
    assert region_of(torch.arange(10)) is None
    assert region_of(torch.from_numpy(np.load(npy))) is None        # read into memory
    written = np.load(npy, mmap_mode="c")
    written[0, 0] = 7                                                # copy-on-write: not the file's
    assert region_of(torch.from_numpy(written)) is None


def test_a_changed_or_short_file_is_refused(npy):
    region = region_of(torch.from_numpy(np.load(npy, mmap_mode="c")))
    print_before = region.fingerprint()
    os.utime(npy, ns=(1, 1))                                         # touched: the same data
    with pytest.raises(DataFileError, match="changed while the run uses it"):
        region.check()
    assert region.fingerprint() == print_before
    with open(npy, "r+b") as f:
        f.truncate(200)
    with pytest.raises(DataFileError, match="has 200 bytes, fewer than the 728"):
        region.check()


def test_batches_are_converted_and_stored_data_keeps_its_size(npy):
    x = torch.from_numpy(np.load(npy, mmap_mode="c"))
    rows = TensorRows.of((x, torch.arange(100, dtype=torch.int32), torch.ones(100, 2, dtype=torch.float16)))
    assert rows.in_memory[0].dtype == torch.int32 and len(rows.mapped) == 1
    xb, yb, hb = rows.take(torch.tensor([3, 1]))
    assert (xb.dtype, yb.dtype, hb.dtype) == (torch.float32, torch.int64, torch.float32)
    assert xb.tolist() == x[[3, 1]].float().tolist() and yb.tolist() == [3, 1]
    worker = pickle.loads(pickle.dumps(rows.for_workers())).attach(rows.in_memory)
    assert all(torch.equal(a, b) for a, b in zip(worker.take(torch.tensor([5])), rows.take(torch.tensor([5]))))


class _Items(torch.utils.data.Dataset):
    def __init__(self, n, bad=-1):
        self.n, self.bad, self.reads = n, bad, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        return torch.full((3 if i != self.bad else 4,), float(i)), i % 2


def test_a_long_dataset_is_read_per_batch_and_a_short_one_up_front():
    model = partial(linear_model, 3, 2)
    from shmopt.problems.builtin import cross_entropy_loss
    long = _Items(10 * EAGER_BELOW)
    p = Problem("long", model, cross_entropy_loss, long, batch_size=8)
    p.validate()
    assert isinstance(p.rows, DatasetRows) and p.num_train == 10 * EAGER_BELOW and long.reads < 100
    x, y = p.rows.take(torch.tensor([7, 2]))
    assert x.tolist() == [[7.0] * 3, [2.0] * 3] and y.tolist() == [1, 0]
    short = Problem("short", model, cross_entropy_loss, _Items(50), batch_size=8)
    assert isinstance(short.train, tuple) and short.train[0].shape == (50, 3)
    assert isinstance(Problem("e", model, cross_entropy_loss, _Items(50), batch_size=8, eager=False).rows, DatasetRows)


def test_a_dataset_whose_items_change_shape_is_refused():
    from shmopt.problems.builtin import cross_entropy_loss
    p = Problem("bad", partial(linear_model, 3, 2), cross_entropy_loss, _Items(10 * EAGER_BELOW, bad=250_000),
                batch_size=8)
    with pytest.raises(ProblemError, match="item 250000 has fields of shapes"):
        p.validate()                             # item 250000 is among the items read up front


def test_a_sampler_goes_on_from_its_shared_position():
    order, state = torch.empty(12, dtype=torch.int32), {"s_epoch": 0, "s_off": 0, "s_len": 0}
    first = Sampler("shuffle", 12, 5, 0, 1, torch.Generator().manual_seed(0), order, state)
    rows = [first.next() for _ in range(2)]                          # 10 of epoch 1
    again = Sampler("shuffle", 12, 5, 0, 1, torch.Generator().manual_seed(9), order, state)
    rest = again.next()                                              # 2 of epoch 1, 3 of epoch 2
    epoch1 = torch.cat(rows + [rest[:2]]).tolist()
    assert sorted(epoch1) == list(range(12)) and state["s_epoch"] == 2 and state["s_off"] == 3


def test_rows_carried_over_are_handed_out_first():
    order = torch.zeros(20, dtype=torch.int64)
    order[:3] = torch.tensor([17, 4, 9])
    state = {"s_epoch": 1, "s_off": 0, "s_len": 3}
    s = Sampler("shard", 20, 2, 1, 2, torch.Generator().manual_seed(0), order, state)
    a, b = s.next().tolist(), s.next().tolist()
    assert a == [17, 4] and b[0] == 9 and 10 <= b[1] < 20 and state["s_epoch"] == 2


def test_an_uncompressed_idx_file_is_mapped_not_read(tmp_path):
    from shmopt.problems.formats import map_idx, read_idx, write_idx
    images = (np.arange(5 * 28 * 28) % 256).astype(np.uint8).reshape(5, 28, 28)
    write_idx(str(tmp_path / "x-idx3-ubyte"), images)
    mapped = map_idx(str(tmp_path / "x-idx3-ubyte"))
    assert np.array_equal(mapped, read_idx(str(tmp_path / "x-idx3-ubyte")))
    region = region_of(torch.from_numpy(mapped))
    assert region is not None and region.offset == 16 and region.shape == (5, 28, 28)
    write_idx(str(tmp_path / "f-idx1"), np.zeros(3, dtype=np.float32))
    with pytest.raises(ProblemError, match="map_idx maps uint8 and int8 IDX files"):
        map_idx(str(tmp_path / "f-idx1"))
    write_idx(str(tmp_path / "x.gz"), images)
    with pytest.raises(ProblemError, match="not an uncompressed IDX file"):
        map_idx(str(tmp_path / "x.gz"))
