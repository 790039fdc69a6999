"""Versioned weights (shmopt.weights): publish and read latency and bandwidth for models of 1 MB,
100 MB and 1 GB, against what users do today.

Per size, interleaved, ROUNDS rounds (medians, min - max):

* ``memcpy``: one ``copy_`` of the model's bytes as one flat float32 tensor (the ceiling);
* ``publish``: ``publisher.publish()`` (the learner's copy into the next slot);
* ``read``: ``reader.read_into(model)`` of the newest version, in another process (a reader
  started with spawn), so the bytes cross processes as an actor's do;
* ``share_memory``: torch's way: the learner's model after ``share_memory()``, an actor's
  ``local.load_state_dict(shared.state_dict())`` in another process;
* ``gloo``: ``torch.distributed.broadcast`` of the flat weights over gloo between two processes on
  this machine (the learner rank 0, the actor rank 1; the actor's time per broadcast);
* ``publish_while_reading``: ``publish()`` while a reader process reads in a loop (goal: the
  publisher never waits for readers: no slower than ``publish`` alone, beyond noise).

Goal of the issue: a read of the newest version at >= 50% of memcpy bandwidth.

    pytest bench/test_weights.py --benchmark-json=bench/results/weights.json
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

import shmopt

pytestmark = pytest.mark.usefixtures("no_leaks")

SIZES = {"1MB": 2 ** 20, "100MB": 100 * 2 ** 20, "1GB": 2 ** 30}
ROUNDS, REPS = 3, 5
PIECES = 4


class Blob(nn.Module):
    """A model of ``nbytes`` float32 bytes in PIECES parameters."""

    def __init__(self, nbytes: int) -> None:
        super().__init__()
        n = nbytes // 4 // PIECES
        self.pieces = nn.ParameterList([nn.Parameter(torch.zeros(n)) for _ in range(PIECES)])


def _median_of(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _shared_child(shared: nn.Module, nbytes: int, reps: int, out) -> None:
    """torch's way: an actor copies the learner's share_memory() model into its own."""
    torch.set_num_threads(1)
    local = Blob(nbytes)
    local.load_state_dict(shared.state_dict())
    out.put(_median_of(lambda: local.load_state_dict(shared.state_dict()), reps))


def _reader_child(name: str, nbytes: int, reps: int, mode: str, out) -> None:
    torch.set_num_threads(1)
    local = Blob(nbytes)
    reader = shmopt.weights.attach(name)
    if mode == "read":
        reader.read_into(local)
        out.put(_median_of(lambda: reader.read_into(local), reps))
    else:                                                   # read in a loop until ``mode`` exists
        out.put("reading")
        while not os.path.exists(mode):
            reader.read_into(local)
        out.put("done")
    reader.close()


def _gloo(rank: int, port: int, nbytes: int, reps: int, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    flat = torch.zeros(nbytes // 4)
    dist.broadcast(flat, 0)
    times = []
    for _ in range(reps):
        dist.barrier()
        t = time.perf_counter()
        dist.broadcast(flat, 0)
        times.append(time.perf_counter() - t)
    if rank == 1:
        out.put(statistics.median(times))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memcpy(nbytes: int, reps: int) -> float:
    src, dst = torch.ones(nbytes // 4), torch.empty(nbytes // 4)
    dst.copy_(src)
    return _median_of(lambda: dst.copy_(src), reps)


def _in_child(ctx, target, args) -> float:
    out = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, out))
    p.start()
    value = out.get(timeout=600)
    p.join(60)
    return value


def _one_round(ctx, nbytes: int, reps: int, tmp: str) -> dict[str, float]:
    torch.set_num_threads(1)
    model = Blob(nbytes)
    out = {"memcpy": _memcpy(nbytes, reps)}
    with shmopt.weights.publish(model) as pub:
        out["publish"] = _median_of(pub.publish, reps)
        out["read"] = _in_child(ctx, _reader_child, (pub.name, nbytes, reps, "read"))
        stop = os.path.join(tmp, f"stop-{nbytes}-{time.monotonic_ns()}")
        q = ctx.Queue()
        p = ctx.Process(target=_reader_child, args=(pub.name, nbytes, reps, stop, q))
        p.start()
        assert q.get(timeout=600) == "reading"
        out["publish_while_reading"] = _median_of(pub.publish, reps)
        open(stop, "w").close()
        assert q.get(timeout=600) == "done"
        p.join(60)
    shared = Blob(nbytes).share_memory()
    out["share_memory"] = _in_child(ctx, _shared_child, (shared, nbytes, reps))
    del shared
    port = _free_port()
    q = ctx.Queue()
    procs = [ctx.Process(target=_gloo, args=(r, port, nbytes, reps, q)) for r in range(2)]
    for p in procs:
        p.start()
    out["gloo"] = q.get(timeout=600)
    for p in procs:
        p.join(60)
    return out


def test_publish_and_read_against_share_memory_and_gloo(benchmark, quick, tmp_path):
    ctx = mp.get_context("spawn")
    sizes = {k: v for k, v in SIZES.items() if k != "1GB"} if quick else SIZES
    rounds = 1 if quick else ROUNDS
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in sizes}
    for _ in range(rounds):
        for label, nbytes in sizes.items():
            runs[label].append(_one_round(ctx, nbytes, REPS, str(tmp_path)))
    table = {}
    for label, rs in runs.items():
        nbytes = sizes[label]
        row = {}
        for what in rs[0]:
            secs = [r[what] for r in rs]
            row[what] = {"s_median": statistics.median(secs), "s_min": min(secs), "s_max": max(secs),
                         "gb_per_s": nbytes / statistics.median(secs) / 1e9}
        row["read_share_of_memcpy"] = row["memcpy"]["s_median"] / row["read"]["s_median"]
        table[label] = row
    benchmark.extra_info.update(kind="weights", quick=quick, rounds=rounds, reps=REPS, sizes=table)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert all(r["read"]["s_median"] > 0 for r in table.values())


class Table(nn.Module):
    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(rows, dim, sparse=True)


TABLE_ROWS, TABLE_DIM, CHANGED = 4_000_000, 64, 0.01          # a 1 GiB table, 1% of its rows per publish


def test_a_table_publishes_and_reads_only_its_changed_rows(benchmark, quick):
    """A 1 GiB table (4M rows x 64), 1% of its rows changed per publish: publish and read_into with
    the rows (``rows=``, ``delta=True``) against whole copies, in one process, ROUNDS x REPS."""
    torch.set_num_threads(1)
    rows = TABLE_ROWS // 16 if quick else TABLE_ROWS
    learner, actor = Table(rows, TABLE_DIM), Table(rows, TABLE_DIM)
    g = torch.Generator().manual_seed(0)
    out: dict[str, list[float]] = {"publish_whole": [], "publish_rows": [], "read_whole": [], "read_rows": []}
    with shmopt.weights.publish(learner) as pub:
        reader = shmopt.weights.attach(pub.name)
        reader.read_into(actor)
        for _ in range(1 if quick else ROUNDS):
            for _ in range(REPS):
                t = time.perf_counter()
                pub.publish()
                out["publish_whole"].append(time.perf_counter() - t)
                t = time.perf_counter()
                reader.read_into(actor, delta=False)
                out["read_whole"].append(time.perf_counter() - t)
            for _ in range(REPS + 2):            # the first two fill the slots' history
                changed = torch.randint(rows, (int(rows * CHANGED),), generator=g)
                with torch.no_grad():
                    learner.emb.weight[changed] += 1.0
                t = time.perf_counter()
                pub.publish(rows={"emb.weight": changed})
                out["publish_rows"].append(time.perf_counter() - t)
                t = time.perf_counter()
                reader.read_into(actor, delta=True)
                out["read_rows"].append(time.perf_counter() - t)
        assert torch.equal(actor.emb.weight, learner.emb.weight)
        rows_only = reader.rows_only
        reader.close()
    med = {k: statistics.median(v[2:] if k.endswith("rows") else v) for k, v in out.items()}
    benchmark.extra_info.update(kind="weights_table", quick=quick, rows=rows, dim=TABLE_DIM, changed=CHANGED,
                                reads_rows_only=rows_only, **{f"{k}_s": v for k, v in med.items()})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert rows_only > 0
