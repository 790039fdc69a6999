"""shmopt.weights with its slots on a GPU (``pytest -m cuda``; skipped without a CUDA device): a
reader in another process attaches by handle (CUDA IPC) and copies whole versions into a model on
the GPU, rows included."""
from __future__ import annotations

import multiprocessing as mp

import pytest
import torch
from torch import nn

import shmopt

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA device: run on a GPU machine (bench/gpu_check.sh)")]


class _Ranker(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(1000, 8, sparse=True)
        self.head = nn.Linear(8, 1)


def _read(handle, q_in, q_out) -> None:
    reader = shmopt.weights.attach(handle)
    model = _Ranker().cuda()
    version = 0
    while (want := q_in.get()) is not None:
        version = reader.read_into(model, min_version=want, timeout=60, delta=True)
        q_out.put((version, model.emb.weight.sum().item(), model.head.weight.sum().item()))
    q_out.put(reader.rows_only)
    reader.close()


def test_slots_on_a_gpu_are_read_by_another_process():
    learner = _Ranker().cuda()
    ctx = mp.get_context("spawn")
    q_in, q_out = ctx.Queue(), ctx.Queue()
    with shmopt.weights.publish(learner, device="cuda") as pub:
        p = ctx.Process(target=_read, args=(pub.handle, q_in, q_out))
        p.start()
        q_in.put(1)
        v, emb, head = q_out.get(timeout=120)
        assert v == 1 and emb == pytest.approx(learner.emb.weight.sum().item(), rel=1e-5)
        for _ in range(3):
            rows = torch.randint(1000, (10,))
            with torch.no_grad():
                learner.emb.weight[rows.cuda()] += 1.0
            v = pub.publish(rows={"emb.weight": rows})
            q_in.put(v)
            got, emb, head = q_out.get(timeout=120)
            assert got == v and emb == pytest.approx(learner.emb.weight.sum().item(), rel=1e-5)
        q_in.put(None)
        assert q_out.get(timeout=120) == 3          # every read after the first took rows only
        p.join(60)
        assert p.exitcode == 0
