"""The CUDA arena on one GPU (skipped without one; bench/gpu_check.sh runs it on a lent machine).

* samples/s on mlp and a small CNN (bench/cuda_problems.py) for 1, 2 and 4 apam workers sharing
  one CUDA arena, against one process training the same model with torch.optim.Adam(amsgrad=True,
  fused=True) on the same GPU;
* time per fused AMSGrad step on shared (CUDA IPC block) against private buffers;
* attach time per worker (a spawned process opening the block) and device memory per worker
  process (``torch.cuda.mem_get_info`` before and during a run, over the workers).

    pytest bench/test_cuda_gpu.py --benchmark-json=OUT/bench.json
"""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import pytest
import torch

import shmopt
from shmopt.memory import attach_storage, create_storage
from shmopt.problems import load_problem
from shmopt.rules import RULES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
SECONDS = 8.0
HERE = os.path.dirname(os.path.abspath(__file__))


def _problem(name: str):
    """(the Problem, what train() takes: a built-in name or the problem file's path)."""
    if name == "cnn":
        from cuda_problems import problem
        return problem(), os.path.join(HERE, "cuda_problems.py")
    return load_problem(name), name


def _baseline(problem, seconds: float) -> float:
    """One process, the model on the GPU, torch.optim.Adam(amsgrad=True, fused=True)."""
    torch.manual_seed(0)
    model = problem.model().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True, fused=True)
    data = tuple(t.cuda() for t in problem.train)
    n, b, done = len(data[0]), problem.batch_size, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        idx = torch.randint(n, (b,), device="cuda")
        opt.zero_grad(set_to_none=False)
        problem.loss(model, tuple(t.index_select(0, idx) for t in data)).backward()
        opt.step()
        done += b
        if done % (50 * b) == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return done / (time.perf_counter() - t0)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_samples_per_second_on_one_gpu(benchmark, name):
    problem, spec = _problem(name)
    out: dict = {"workers": {}}

    def run():
        out["baseline"] = _baseline(problem, SECONDS)
        for w in (1, 2, 4):
            free0 = torch.cuda.mem_get_info()[0]
            peak = [free0]

            stop = threading.Event()

            def watch():
                while not stop.wait(0.5):
                    peak[0] = min(peak[0], torch.cuda.mem_get_info()[0])
            th = threading.Thread(target=watch, daemon=True)
            th.start()
            r = shmopt.train(spec, algo="apam", workers=w, time_limit=SECONDS, device="cuda",
                             threads=1, eval_interval=2.0)
            stop.set()
            th.join()
            out["workers"][w] = {"samples_per_s": r.stats["samples_per_s"],
                                 "mem_per_worker_mib": (free0 - peak[0]) / w / 2**20,
                                 "final_loss": r.final_loss}

    benchmark.pedantic(run, rounds=1, iterations=1)
    base = out["baseline"]
    benchmark.extra_info.update(kind="gpu_scaling", problem=name, device=torch.cuda.get_device_name(),
                                baseline_samples_per_s=base,
                                workers={str(w): {**m, "vs_baseline": m["samples_per_s"] / base}
                                         for w, m in out["workers"].items()})


def _attach_child(handle, q):
    t0 = time.perf_counter()
    st = attach_storage(handle)
    st.bytes(0, 4).view(torch.float32)[0] += 1
    torch.cuda.synchronize()
    q.put(time.perf_counter() - t0)
    st.close()


def test_fused_step_shared_vs_private_and_attach_time(benchmark):
    n, reps = 4_000_000, 200
    rule = RULES["amsgrad"].from_options({"lr": 1e-3, "betas": (0.9, 0.999)})
    st = create_storage(16 * n, "cuda:0")
    try:
        shared = [st.bytes(i * 4 * n, 4 * n).view(torch.float32) for i in range(4)]
        private = [torch.zeros(n, device="cuda") for _ in range(4)]
        g = torch.randn(n, device="cuda")
        times = {}

        def timed(bufs):
            x, m, v, vmax = bufs
            state = {"m": m, "v": v, "vmax": vmax}
            rule.init(state)
            for s in range(10):
                rule.update(x, g, state, step=s + 1, lr=1e-3)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for s in range(reps):
                rule.update(x, g, state, step=s + 11, lr=1e-3)
            torch.cuda.synchronize()
            return (time.perf_counter() - t0) / reps

        def run():
            times["shared"] = min(timed(shared) for _ in range(3))
            times["private"] = min(timed(private) for _ in range(3))
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            attach = []
            for _ in range(3):
                p = ctx.Process(target=_attach_child, args=(st.export(), q))
                p.start()
                attach.append(q.get(timeout=120))
                p.join(60)
            times["attach_s"] = sorted(attach)[1]

        benchmark.pedantic(run, rounds=1, iterations=1)
        benchmark.extra_info.update(kind="gpu_step", params=n, shared_ms=1e3 * times["shared"],
                                    private_ms=1e3 * times["private"],
                                    ratio=times["shared"] / times["private"],
                                    attach_ms=1e3 * times["attach_s"])
    finally:
        st.unlink()
