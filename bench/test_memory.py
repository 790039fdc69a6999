"""Memory: what a worker keeps privately and what the arena holds, as multiples of the parameter
bytes (4 bytes per float32 parameter), for a model of about 10M parameters.

The model is the ``mlp`` problem with ``hidden=3130`` (64-3130-3130-10: 10,034,790 parameters,
40 MB). An Engine (apam, direct protocol, 2 workers; the default snapshot reads, then
``read="inplace"``) is started; once every worker has applied a few updates, the USS
(``psutil.Process(pid).memory_full_info().uss``: the pages mapped by this process alone) of
every worker is read SAMPLES times while it trains (median, min and max over the samples of
all rounds and workers). The same is done for a tiny model (``hidden=8``, 682 parameters): its
USS is the torch runtime and shmopt's own code, and is subtracted, so the figure is "beyond the
torch runtime". The engines run alternately, ROUNDS times.

USS counts pages by who maps them, not by kind: a worker's row of the snapshot buffer lives in
the arena (a shared mapping) but no other process touches it, so it is in that worker's USS.
The split is reported: ``arena_uss`` (pages of the arena mapping counted in the USS) and
``heap_uss`` (the rest: the private gradient buffer, autograd's temporaries, activations).

Expected, for apam direct with snapshot reads: arena = x, m, v, v-hat + one snapshot per worker
= (4 + P) x the parameter bytes, plus the training data and the control block; per worker:
the flat gradient (1x), its snapshot row (1x) and, during backward, autograd's temporary
gradient of the layer being accumulated (up to the largest layer, ~1x here).

For comparison, the PyTorch mnist_hogwild pattern (bench/baselines.py: ``model.share_memory()``,
one ``torch.optim.Adam(amsgrad=True)`` per process) is measured the same way, with 2 spawn
processes and its own tiny-model runtime subtracted: each process keeps its gradient and its
own m, v, v-hat privately.

    pytest bench/test_memory.py --benchmark-json=bench/results/memory.json
"""
from __future__ import annotations

import gc
import statistics
import time

import baselines
import psutil
import pytest
import torch

from shmopt import Config, Engine
from shmopt.memory.flat import bind_grads, bind_params, numel
from shmopt.plan import default_threads
from shmopt.problems import load_problem

pytestmark = pytest.mark.usefixtures("no_leaks")

HIDDEN_BIG, HIDDEN_TINY = 3130, 8
WORKERS = 2
#: the engine's defaults, then the read mode without a per-worker snapshot
VARIANTS = {"default": {"read": "snapshot"}, "inplace": {"read": "inplace"}}
MB = 2**20


def _uss_split(pid: int, arena_name: str) -> tuple[int, int]:
    """(USS, the part of it inside the arena mapping) of one process, in bytes."""
    proc = psutil.Process(pid)
    uss = proc.memory_full_info().uss
    in_arena = 0
    for m in proc.memory_maps(grouped=True):
        if arena_name in m.path:
            in_arena += m.private_clean + m.private_dirty
    return uss, in_arena


def _measure(problem, samples: int, interval: float, min_updates: int, **options) -> dict:
    cfg = Config(algo="apam", workers=WORKERS, time_limit=600.0, eval_interval=600.0,
                 eval_samples=256, **options)
    eng = Engine(problem, cfg)
    try:
        eng.start()
        ctrl = eng.arena.array("ctrl")
        deadline = time.monotonic() + 120.0
        while int(ctrl["updates"][:WORKERS].min()) < min_updates:    # every worker training
            assert eng.poll() is None
            assert time.monotonic() < deadline, "workers did not reach steady state in 120 s"
            time.sleep(0.02)
        uss: list[list[int]] = [[] for _ in range(WORKERS)]
        in_arena: list[list[int]] = [[] for _ in range(WORKERS)]
        for _ in range(samples):
            for rank, p in enumerate(eng.procs[:WORKERS]):
                u, a = _uss_split(p.pid, eng.arena.name)
                uss[rank].append(u)
                in_arena[rank].append(a)
            time.sleep(interval)
        assert eng.poll() is None
        updates = eng.updates()
        out = {"params": eng.n_params, "arena_bytes": eng.arena.layout.nbytes,
               "data_bytes": sum(t.numel() * t.element_size() for t in problem.train),
               "uss": uss, "arena_uss": in_arena, "updates": updates}
    finally:
        eng.close()
    return out


def _measure_pattern(problem, samples: int, interval: float, settle: float) -> list[list[int]]:
    """USS of each process of the mnist_hogwild pattern (bench/baselines.py) while it trains."""
    uss: list[list[int]] = [[] for _ in range(WORKERS)]

    def during(procs, model) -> None:
        time.sleep(settle)                     # a few steps: the optimizer state exists
        for _ in range(samples):
            for rank, p in enumerate(procs):
                uss[rank].append(psutil.Process(p.pid).memory_full_info().uss)
            time.sleep(interval)

    baselines.hogwild(problem, WORKERS, settle + samples * interval + 1.0,
                      threads=default_threads(WORKERS), during=during)
    return uss


@pytest.mark.timeout_s(600)
def test_worker_private_memory_10m_parameters(benchmark, quick, warm_forkserver):
    rounds, samples = (1, 6) if quick else (3, 8)
    big = load_problem("mlp", hidden=HIDDEN_BIG, n=2048)
    tiny = load_problem("mlp", hidden=HIDDEN_TINY, n=2048)
    res: dict[str, list[dict]] = {"tiny": [], **{v: [] for v in VARIANTS}}
    pattern: dict[str, list[list[list[int]]]] = {"tiny": [], "big": []}

    def one_round():
        res["tiny"].append(_measure(tiny, samples, 0.1, 20))
        for variant, options in VARIANTS.items():
            res[variant].append(_measure(big, samples, 0.25, 3, **options))
        pattern["tiny"].append(_measure_pattern(tiny, samples, 0.1, 0.5))
        pattern["big"].append(_measure_pattern(big, samples, 0.25, 2.0))

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)

    def flat(key: str, which: str) -> list[int]:
        return [u for r in res[which] for per_worker in r[key] for u in per_worker]

    n = res["default"][0]["params"]
    pbytes = 4 * n
    tiny_uss = statistics.median(flat("uss", "tiny"))
    tiny_arena = statistics.median(flat("arena_uss", "tiny"))
    info = {"kind": "memory", "params": n, "param_mb": pbytes / MB, "workers": WORKERS, "algo": "apam",
            "protocol": "direct", "rounds": rounds, "samples_per_worker": samples * rounds,
            "tiny_params": res["tiny"][0]["params"], "runtime_uss_mb": tiny_uss / MB}
    for read, options in VARIANTS.items():
        uss, arena_uss = flat("uss", read), flat("arena_uss", read)
        beyond = [u - tiny_uss for u in uss]
        heap = [(u - a) - (tiny_uss - tiny_arena) for u, a in zip(uss, arena_uss)]
        arena_bytes, data_bytes = res[read][0]["arena_bytes"], res[read][0]["data_bytes"]
        info[read] = {
            "uss_mb_median": statistics.median(uss) / MB, "uss_mb_max": max(uss) / MB,
            "private_x": statistics.median(beyond) / pbytes, "private_x_min": min(beyond) / pbytes,
            "private_x_max": max(beyond) / pbytes,
            # the samples that caught a step's temporaries (autograd's layer gradient): > floor + 0.5x
            "peak_share": sum(b > min(beyond) + 0.5 * pbytes for b in beyond) / len(beyond),
            "arena_part_x": statistics.median(arena_uss) / pbytes,
            "heap_part_x": statistics.median(heap) / pbytes, "heap_part_x_max": max(heap) / pbytes,
            "arena_mb": arena_bytes / MB, "shared_x": arena_bytes / pbytes,
            "shared_x_without_data": (arena_bytes - data_bytes) / pbytes,
            "shared_x_expected": 4 + (WORKERS if options["read"] == "snapshot" else 0),
            "updates": [r["updates"] for r in res[read]]}
        # the arena holds x, m, v, vmax (+ one snapshot per worker), the data and the control block
        expected = info[read]["shared_x_expected"]
        assert expected <= info[read]["shared_x_without_data"] < expected + 0.05
        assert statistics.median(beyond) > 0.5 * pbytes        # the private gradient buffer at least
    # the PyTorch mnist_hogwild pattern: shared parameters, per-process gradients and Adam state
    p_tiny = statistics.median(u for r in pattern["tiny"] for w in r for u in w)
    p_big = [u - p_tiny for r in pattern["big"] for w in r for u in w]
    info["pattern"] = {"runtime_uss_mb": p_tiny / MB, "private_x": statistics.median(p_big) / pbytes,
                       "private_x_min": min(p_big) / pbytes, "private_x_max": max(p_big) / pbytes,
                       "shared_x": 1.0}
    info["variants"] = {v: ", ".join(f"{k}={x}" for k, x in o.items()) for v, o in VARIANTS.items()}
    benchmark.extra_info.update(info)
    # gradient (1x) and private m, v, v-hat (3x) per process
    assert info["pattern"]["private_x"] > 3.0
    # snapshot reads keep one more copy of the parameters per worker (its snapshot row)
    assert info["default"]["arena_part_x"] > info["inplace"]["arena_part_x"] + 0.5


def test_memory_of_one_step_in_process(benchmark):
    """Where a worker's private bytes come from, step by step, in this process: the USS after
    building the model, after binding its parameters to one flat buffer (what a worker does
    with its snapshot row), after allocating the flat gradient, and inside a backward hook
    (autograd's gradient of a layer exists before it is added into the bound ``.grad``)."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    proc = psutil.Process()
    out: dict = {}

    def run():
        prob = load_problem("mlp", hidden=HIDDEN_BIG, n=2048)
        u0 = proc.memory_full_info().uss
        model = prob.model()
        n = numel(model)
        u_model = proc.memory_full_info().uss
        flat_x = torch.zeros(n)
        bind_params(model, flat_x, copy=True)
        gc.collect()
        u_bound = proc.memory_full_info().uss
        g = torch.zeros(n)
        bind_grads(model, g)
        u_grad = proc.memory_full_info().uss
        in_hook: list[int] = []
        handles = [p.register_hook(lambda grad: in_hook.append(proc.memory_full_info().uss))
                   for p in model.parameters()]
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            idx = torch.randint(len(prob.train[0]), (prob.batch_size,), generator=gen)
            g.zero_()
            prob.loss(model, tuple(t.index_select(0, idx) for t in prob.train)).backward()
        u_after = proc.memory_full_info().uss
        for h in handles:
            h.remove()
        pb = 4 * n
        out.update(kind="memory_steps", params=n, model_x=(u_model - u0) / pb,
                   bound_x=(u_bound - u0) / pb, grad_x=(u_grad - u_bound) / pb,
                   backward_peak_x=(max(in_hook) - u_grad) / pb, after_step_x=(u_after - u_grad) / pb,
                   largest_layer_x=max(p.numel() for p in model.parameters()) / n)
        del model, flat_x, g

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        torch.set_num_threads(torch_threads)
    benchmark.extra_info.update(out)
    assert 0.9 < out["grad_x"] < 1.1
    # the temporary gradient of the largest layer, before it is accumulated into .grad
    assert out["backward_peak_x"] > 0.5 * out["largest_layer_x"]
