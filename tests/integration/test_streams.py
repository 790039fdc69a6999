"""Streams: an IterableDataset every worker reads its share of, in order (shmopt.shard_stream),
whose position a checkpoint keeps; a DataLoader with worker processes inside an engine worker;
bad streams refused before anything starts (problems_for_tests/counting.py, source=stream)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from helpers import engine_children, run_main

import shmopt
from shmopt.engine import checkpoint as ckpt
from shmopt.errors import ConfigError
from shmopt.memory import list_segments

HERE = pathlib.Path(__file__).parent
COUNTING = str(HERE / "problems_for_tests" / "counting.py")
N, B = 60, 10


def _run(out: pathlib.Path, **opts) -> shmopt.Result:
    out.mkdir(exist_ok=True)
    options = {"out_dir": str(out), "n": N, "batch_size": B, "source": "stream",
               "loader_workers": opts.pop("loader_workers", 0)}
    return shmopt.train(COUNTING, problem_options=options, **opts)


def _seen(out: pathlib.Path) -> dict[int, list[int]]:
    seen: dict[int, list[int]] = {}
    for p in sorted(out.glob("*.ids")):
        seen.setdefault(int(p.name.split("-")[0]), []).extend(np.fromfile(p, dtype=np.int64).tolist())
    return seen


def _share(rank: int, workers: int, length: int) -> list[int]:
    """Learner ``rank``'s items, pass after pass (the stream starts again when it ends)."""
    mine = list(range(rank, N, workers))
    return (mine * (length // len(mine) + 1))[:length]


def test_each_worker_reads_its_share_in_order(tmp_path):
    _run(tmp_path, algo="hogwild", workers=2, steps=20)
    seen = _seen(tmp_path)
    assert seen and set(seen) <= {0, 1}          # every worker that ran (a late one may see none)
    for r, rows in seen.items():
        assert rows == _share(r, 2, len(rows))


def test_a_resumed_stream_goes_on_where_it_was(tmp_path):
    path = str(tmp_path / "run.ckpt")
    _run(tmp_path / "a", algo="hogwild", workers=2, steps=7, checkpoint=path)
    saved = ckpt.load(path)["updates"]
    _run(tmp_path / "b", algo="hogwild", workers=2, steps=saved + 12, resume=path)
    a, b = _seen(tmp_path / "a"), _seen(tmp_path / "b")
    for r in (0, 1):
        rows = a.get(r, []) + b.get(r, [])
        assert rows == _share(r, 2, len(rows))                  # nothing skipped, nothing twice


def test_a_dataloader_with_workers_runs_inside_an_engine_worker(tmp_path):
    _run(tmp_path, algo="hogwild", workers=2, steps=10, loader_workers=1)
    seen = _seen(tmp_path)
    assert seen and all(rows == _share(r, 2, len(rows)) for r, rows in seen.items())
    assert not engine_children()


@pytest.mark.parametrize("args, needle", [
    (["-o", "n=5"], "the train stream ended after 5 items, before the first batch of 10"),
    (["--sampling", "shard"], "invalid sampling='shard': a stream is read in order"),
])
def test_bad_streams_are_one_line_and_exit_2(tmp_path, capsys, args, needle):
    code, _, err = run_main(["run", COUNTING, "-o", f"out_dir={tmp_path}", "-o", "source=stream",
                             "-o", "batch_size=10", "--steps", "5", *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not engine_children() and not list_segments()


def test_a_stream_refuses_another_worker_count_on_resume(tmp_path):
    path = str(tmp_path / "run.ckpt")
    _run(tmp_path / "a", algo="hogwild", workers=2, steps=5, checkpoint=path)
    with pytest.raises(ConfigError, match="its own share of a stream"):
        _run(tmp_path / "b", algo="hogwild", workers=1, steps=10, resume=path)
