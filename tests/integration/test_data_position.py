"""Where the data comes from and where each worker is in it: memory-mapped and per-batch datasets
train without a copy, and a run stopped mid-epoch and resumed (at the same or another worker
count) sees every row of that epoch exactly once (counted by the loss: problems_for_tests/counting)."""
from __future__ import annotations

import pathlib
from collections import Counter

import numpy as np
import pytest
from helpers import engine_children, run_main

import shmopt
from shmopt.engine import checkpoint as ckpt
from shmopt.engine.layout import data_names
from shmopt.errors import ConfigError
from shmopt.memory import list_segments

HERE = pathlib.Path(__file__).parent
COUNTING = str(HERE / "problems_for_tests" / "counting.py")
N, B = 400, 10


def _run(out: pathlib.Path, **opts) -> shmopt.Result:
    out.mkdir(exist_ok=True)
    source = opts.pop("source", "tensor")
    return shmopt.train(COUNTING, problem_options={"out_dir": str(out), "n": N, "batch_size": B,
                                                   "source": source}, **opts)


def _seen(out: pathlib.Path) -> dict[int, list[int]]:
    """The rows each rank trained on, in order (one process per rank: no restarts here)."""
    seen: dict[int, list[int]] = {}
    for p in sorted(out.glob("*.ids")):
        seen.setdefault(int(p.name.split("-")[0]), []).extend(np.fromfile(p, dtype=np.int64).tolist())
    return seen


def _current_epoch(rows: list[int], size: int) -> list[int]:
    """The rows of the epoch in progress at the stop (none when it stopped on an epoch's end)."""
    return rows[len(rows) - len(rows) % size:]


@pytest.mark.parametrize("source", ["tensor", "memmap", "dataset"])
def test_each_source_trains_and_feeds_the_rows_asked_for(tmp_path, source):
    r = _run(tmp_path, source=source, algo="hogwild", workers=2, steps=40, sampling="shard")
    seen = _seen(tmp_path)
    # a worker that the run stopped before its first batch saw none: every one that ran is checked
    assert seen and set(seen) <= {0, 1} and r.stats["updates"] >= 40
    for r, (lo, hi) in enumerate([(0, 200), (200, 400)]):     # its own shard, no row twice in an epoch
        rows = seen.get(r, [])[:200]
        assert len(set(rows)) == len(rows) and set(rows) <= set(range(lo, hi))


def test_a_mapped_file_is_not_copied_into_shared_memory(tmp_path):
    problem = shmopt.load_problem(COUNTING, out_dir=str(tmp_path), n=N, batch_size=B, source="memmap")
    eng = shmopt.Engine(problem, shmopt.Config(algo="hogwild", workers=1, steps=5))
    names = [e.name for e in eng.layout.entries]
    assert data_names(1) == ("data0",) and "data0" in names and "data1" not in names    # ids only
    assert [e.dtype.itemsize for e in eng.layout.entries if e.name == "data0"] == [8]
    eng.close()


def test_resume_mid_epoch_sees_each_row_once(tmp_path):
    path = str(tmp_path / "run.ckpt")
    _run(tmp_path / "a", algo="hogwild", workers=2, steps=25, sampling="shard", checkpoint=path)
    saved = ckpt.load(path)["updates"]
    _run(tmp_path / "b", algo="hogwild", workers=2, steps=saved + 200, sampling="shard", resume=path)
    a, b = _seen(tmp_path / "a"), _seen(tmp_path / "b")
    shard = N // 2
    assert any(len(a.get(r, [])) % shard for r in (0, 1))      # 25 batches < 2 epochs: one was mid-epoch
    for r in (0, 1):
        rows = a.get(r, []) + b.get(r, [])
        lo = r * shard
        for e in range(len(rows) // shard):                    # every whole epoch: each row once
            assert sorted(rows[e * shard:(e + 1) * shard]) == list(range(lo, lo + shard))
        assert len(set(rows[len(rows) - len(rows) % shard:])) == len(rows) % shard   # no repeat in the last
    assert max(len(a.get(r, []) + b.get(r, [])) for r in (0, 1)) >= shard  # >= 225 batches over 2 ranks


def test_resume_at_fewer_workers_finishes_each_interrupted_epoch_once(tmp_path):
    path = str(tmp_path / "run.ckpt")
    _run(tmp_path / "a", algo="hogwild", workers=2, steps=25, sampling="shuffle", checkpoint=path)
    saved = ckpt.load(path)["updates"]
    r = _run(tmp_path / "b", algo="hogwild", workers=1, steps=saved + 100, sampling="shuffle", resume=path)
    a, b = _seen(tmp_path / "a"), _seen(tmp_path / "b")[0]
    assert r.history[0]["updates"] == saved                     # the global count goes on
    at = 0
    for old in (0, 1):                                          # old worker r's rest comes r-th
        begun = _current_epoch(a.get(old, []), N)
        if not begun:
            continue
        rest = b[at:at + N - len(begun)]
        at += len(rest)
        assert sorted(begun + rest) == list(range(N))           # that epoch: every row, once
    assert Counter(b[at:at + N]) == Counter(range(N))           # then its own epochs


def test_resume_at_more_workers_hands_each_old_rest_to_one_worker(tmp_path):
    path = str(tmp_path / "run.ckpt")
    _run(tmp_path / "a", algo="hogwild", workers=2, steps=25, sampling="shard", checkpoint=path)
    saved = ckpt.load(path)["updates"]
    _run(tmp_path / "b", algo="hogwild", workers=3, steps=saved + 60, sampling="shard", resume=path)
    a, b = _seen(tmp_path / "a"), _seen(tmp_path / "b")
    for old in (0, 1):                                          # new worker j = old worker j
        begun = _current_epoch(a.get(old, []), N // 2)
        rest = b.get(old, [])[:N // 2 - len(begun)] if begun else []
        assert len(set(begun + rest)) == len(begun + rest)      # never twice
        assert set(begun + rest) <= set(range(old * N // 2, (old + 1) * N // 2))
    assert set(b.get(2, [])) <= set(range(2 * N // 3, N))       # the new worker: its own new shard


def test_replica_methods_refuse_another_worker_count(tmp_path):
    path = str(tmp_path / "run.ckpt")
    _run(tmp_path / "a", algo="easgd", workers=2, steps=10, checkpoint=path)
    with pytest.raises(ConfigError, match="2 workers and this run has 3: replica methods keep one model"):
        _run(tmp_path / "b", algo="easgd", workers=3, steps=20, resume=path)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code, _, err = run_main(args, capsys)
    assert not engine_children() and not list_segments()
    return code, err


def test_a_missing_or_short_data_file_is_one_line_and_exit_2(tmp_path, capsys):
    base = ["run", COUNTING, "-o", f"out_dir={tmp_path}", "-o", "source=memmap", "--steps", "5"]
    code, err = _cli(base + ["-o", f"path={tmp_path / 'none.npy'}"], capsys)
    assert code == 2 and "No such file" in err and len(err.strip().splitlines()) == 1
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((400, 4), dtype=np.uint8))
    short.write_bytes(short.read_bytes()[:300])
    code, err = _cli(base + ["-o", f"path={short}"], capsys)
    assert code == 2 and "mmap length is greater than file size" in err


def test_a_resume_whose_data_file_changed_is_refused(tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((N, 4), dtype=np.uint8))
    ckpt_path = tmp_path / "run.ckpt"
    base = ["run", COUNTING, "-o", f"out_dir={tmp_path}", "-o", "source=memmap", "-o", f"path={data}"]
    assert _cli(base + ["--steps", "5", "--checkpoint", str(ckpt_path)], capsys)[0] == 0
    np.save(data, np.ones((N, 4), dtype=np.uint8))                    # same shape, other rows
    code, err = _cli(base + ["--steps", "10", "--resume", str(ckpt_path)], capsys)
    assert code == 2 and "does not fit this run: data is" in err
