"""The CUDA arena's parts that run without a GPU: the device option and its refusals, where every
layout entry goes, the handle envelope, the fence, and that the GPU tests are collected and
skipped (never faked) here."""
from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
import torch

from shmopt.config import Config
from shmopt.devices import resolve_device, resolve_gpus
from shmopt.engine.layout import build_layout
from shmopt.errors import ConfigError
from shmopt.memory import HOST, fence_for
from shmopt.memory import cuda as cuda_mem
from shmopt.memory.layout import DEVICE, DEVICE_ALIGN
from shmopt.memory.storage import StorageHandle
from shmopt.plan import resolve
from shmopt.problems import load_problem


def test_device_option_resolves_and_refuses_with_one_clear_line(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    none, two = (lambda: 0), (lambda: 2)
    assert resolve_device("cpu", count=none) == "cpu"
    assert resolve_device("auto", count=none) == "cpu" and resolve_device("auto", count=two) == "cuda:0"
    assert resolve_device("cuda", count=two) == "cuda:0" and resolve_device("CUDA:1", count=two) == "cuda:1"
    for text, match in (("gpu", "choose cpu, cuda, cuda:N or auto"), ("cuda:-1", "invalid device"),
                        ("cuda:one", "invalid device")):
        with pytest.raises(ConfigError, match=match):
            resolve_device(text, count=two)
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        resolve_device("cuda", count=none)
    with pytest.raises(ConfigError, match=r"2 CUDA device\(s\) visible, indices 0..1"):
        resolve_device("cuda:2", count=two)
    with pytest.raises(ConfigError, match="across nodes needs NCCL"):
        resolve_device("cuda", nnodes=2, count=two)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:64, expandable_segments:True")
    with pytest.raises(ConfigError, match="expandable_segments on"):
        resolve_device("cuda", count=two)


def test_gpus_option_refusals(monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    two = lambda: 2  # noqa: E731
    assert resolve_gpus(Config(), "cuda", count=two) == ()          # one GPU: everything on it
    for kw, device, match in (({"gpus": 0}, "cuda", "invalid gpus=0"),
                              ({"gpus": 2}, "cpu", "needs --device cuda"),
                              ({"gpus": 2}, "cuda:1", r"invalid gpus=2: 2 CUDA device\(s\) visible, 1 from cuda:1"),
                              ({"gpus": 2, "algo": "lsgd"}, "cuda", r"replica methods \(lsgd, easgd, local-sgd\) run on one GPU"),
                              ({"gpus": 2, "read": "inplace"}, "cuda", "use --read snapshot")):
        with pytest.raises(ConfigError, match=match):
            resolve_gpus(Config(**kw), device, count=two)


def test_a_new_device_type_is_one_more_backend_in_the_list(monkeypatch):
    from shmopt import devices
    from shmopt.memory import backends

    class Fake:                  # the device questions only: nothing is allocated here
        name, device_type, label = "fake-ipc", "meta", "META"
        create = attach = None

        def device_count(self):
            return 3

        def resolve(self, text, index, visible, nnodes):
            return f"meta:{index or 0}"

        def fence(self, device):
            return lambda: "fenced"

        def device_id(self, index):
            return f"M{index}"

        def local_index(self, device_id):
            return int(device_id[1:])

    monkeypatch.setattr(backends, "BACKENDS", (*backends.BACKENDS, Fake()))
    assert devices.choices() == "cpu, cuda, cuda:N, meta, meta:N or auto"
    assert devices.resolve_device("META:2") == "meta:2"
    assert devices.resolve_gpus(Config(gpus=2), "meta:1") == ("M1", "M2")
    assert backends.local_device("meta:0", "M2") == torch.device("meta", 2)
    assert backends.fence_for("meta:0")() == "fenced"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible here")
def test_asking_for_cuda_without_a_device_is_refused_before_anything_starts():
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        resolve(Config(device="cuda"), load_problem("logreg"))


@pytest.mark.parametrize("algo, extra", [("apam", {}), ("k-async", {"lr_policy": "dutta", "lr_c": 1.0}),
                                         ("lsgd", {})])
def test_every_buffer_but_the_control_block_lives_on_the_device(algo, extra):
    problem = load_problem("logreg")
    plan = resolve(Config(algo=algo, workers=2, **extra), problem)
    plan = replace(plan, worker=replace(plan.worker, device="cuda:0"))
    layout = build_layout(plan, 33, problem.train)
    assert layout.device == "cuda:0"
    for e in layout.entries:
        if e.name in ("glob", "ctrl", "slot_version", "consumed"):
            assert e.region == HOST, e.name             # host counters and records
        else:
            assert e.placement == DEVICE and e.region == DEVICE and e.offset % DEVICE_ALIGN == 0, e.name
    assert {"x", "data0", "data1"} <= {e.name for e in layout.entries if e.region == DEVICE}


def test_the_handle_envelope_pickles_and_the_device_is_mapped_by_uuid(monkeypatch):
    args = tuple(range(cuda_mem.REDUCE_ARGS))
    h = StorageHandle(cuda_mem.BACKEND.name, "cuda:GPU-x", 1024, extra=(args, "GPU-x"))
    assert pickle.loads(pickle.dumps(h)) == h
    seen = {}
    import torch.multiprocessing.reductions as red
    monkeypatch.setattr(red, "rebuild_cuda_tensor", lambda *a: seen.setdefault("args", a))
    cuda_mem.rebuild(args, 3)
    assert seen["args"][cuda_mem.REDUCE_DEVICE_AT] == 3 and len(seen["args"]) == cuda_mem.REDUCE_ARGS
    with pytest.raises(RuntimeError, match="without attach arguments"):
        cuda_mem.BACKEND.attach(StorageHandle(cuda_mem.BACKEND.name, "cuda:GPU-x", 1024))


def test_the_host_fence_is_free_and_expandable_segments_are_recognised():
    assert fence_for("cpu")() is None
    assert not cuda_mem.expandable_segments_on({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"})
    assert cuda_mem.expandable_segments_on({"PYTORCH_ALLOC_CONF": "expandable_segments:True"})


def test_gpu_tests_are_collected_and_skipped_without_a_device(pytestconfig):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/gpu/test_cuda_arena.py"],
                         cwd=pytestconfig.rootpath, capture_output=True, text=True, timeout=120).stdout
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the GPU tests run instead")
    assert "skipped" in out and "no CUDA device" in out and "passed" not in out, out


def test_a_wait_is_marked_idle_and_a_pause_asked_meanwhile_is_honoured_after_it():
    import multiprocessing as mp

    from shmopt.engine.wakeups import WakeUps
    w = WakeUps(mp.get_context("spawn"), 1)
    marks, checks = [], []
    w.idle = marks.append
    w.release(0)
    assert w.wait_release(0, lambda: checks.append(len(marks)), timeout=1.0)
    assert marks == [True, False]              # idle while waiting, not after
    assert checks[-1] == 2                     # one more check once the wait is over
    assert WakeUps(mp.get_context("spawn"), 1).idle is None     # a host arena never marks idle
