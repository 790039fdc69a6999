"""The memory layer and the engine's protocol objects, each in one process (no spawned workers)."""
from __future__ import annotations

import multiprocessing as mp
import threading
import time

import numpy as np
import pytest
import torch

from shmopt.engine import control, mailbox
from shmopt.engine.control import Counters
from shmopt.engine.mailbox import RING, GradientMailbox
from shmopt.engine.store import SeqlockStore, SummedStore
from shmopt.engine.wakeups import WakeUps, wait_on
from shmopt.errors import ConfigError
from shmopt.memory import DEVICE, HOST, Arena, Layout, StorageHandle, attach_storage, list_segments
from shmopt.memory.layout import ALIGN


def _arena(specs, device="cpu") -> Arena:
    return Arena.create(Layout.build(specs, device))


# ------------------------------------------------------------------------------------- memory
def test_layout_places_entries_aligned_and_the_control_block_on_the_host():
    lay = Layout.build([*control.specs(3), ("x", (10,), "float32"), ("n", (3,), "int64")])
    assert [e.region for e in lay.entries] == [HOST] * 4          # a CPU arena: one block
    assert [e.placement for e in lay.entries] == [HOST, HOST, DEVICE, DEVICE]
    assert all(e.offset % ALIGN == 0 for e in lay.entries)
    offsets = [e.offset for e in lay.entries]
    assert offsets == sorted(offsets) and len(set(offsets)) == 4
    assert lay["ctrl"].nbytes == 3 * 512                          # one 512-byte slot per process


def test_a_device_layout_splits_regions_and_keeps_records_on_the_host():
    lay = Layout.build([*control.specs(2), ("x", (10,), "float32")], device="cuda:0")
    assert {e.name: e.region for e in lay.entries} == {"glob": HOST, "ctrl": HOST, "x": DEVICE}
    assert dict(lay.regions) == {HOST: lay["ctrl"].offset + 2 * 512, DEVICE: 256}
    with pytest.raises(ValueError, match="structured record"):
        Layout.build([("ctrl", (2,), control.SLOT, DEVICE)], device="cuda:0")


def test_arena_views_are_made_by_torch_and_shared_between_attachments():
    arena = _arena([*control.specs(2), ("x", (2, 5), "float32"), ("k", (4,), "int64")])
    try:
        other = Arena.attach(arena.handle)
        arena.tensor("x")[1, 2] = 7.0
        arena.tensor("k")[3] = 41
        other.array("ctrl")[1]["updates"] = 9
        assert other.tensor("x")[1, 2].item() == 7.0 and other.tensor("x").shape == (2, 5)
        assert other.tensor("k").dtype == torch.int64 and int(other.tensor("k")[3]) == 41
        assert int(arena.array("ctrl")[1]["updates"]) == 9
        raw = arena.raw("x")
        assert raw.dtype == torch.uint8 and raw.numel() == 40
        assert raw.view(torch.float32)[7].item() == 7.0
        with pytest.raises(TypeError, match="records"):
            arena.tensor("ctrl")
        other.close(unlink=False)
        assert arena.name in list_segments()                      # an attachment never unlinks
    finally:
        arena.close()
    assert arena.name not in list_segments()


def test_storage_dispatch_on_the_handle_backend():
    with pytest.raises(ConfigError, match="unknown storage backend 'nope'"):
        attach_storage(StorageHandle("nope", "x", 1))


def _members(protocol) -> set[str]:
    return {n for n in vars(protocol) if not n.startswith("_")} | set(protocol.__annotations__)


def test_every_listed_backend_implements_the_whole_contract():
    """Nothing above the memory layer probes a block: each backend and the class of the blocks
    it makes have every member of the protocols."""
    from typing import get_type_hints

    from shmopt.memory import BACKENDS, Backend, Storage, backend_for
    assert backend_for("cpu").name == "shm" and backend_for("cuda").name == "cuda-ipc"
    assert len({b.name for b in BACKENDS}) == len(BACKENDS)
    for b in BACKENDS:
        assert all(hasattr(b, m) for m in _members(Backend)), b.name
        made = get_type_hints(type(b).create)["return"]
        attrs = {"handle", "owner", "device"}                     # set per block in __init__
        assert all(hasattr(made, m) for m in _members(Storage) - attrs), made


def test_the_host_block_keeps_the_storage_contract():
    from shmopt.memory import backend_for
    shm = backend_for("cpu")
    st = shm.create(100, torch.device("cpu"), "t1")
    try:
        assert st.owner and st.handle.backend == shm.name and st.device.type == "cpu"
        assert st.export() == st.handle and st.sync() is None and st.fileno() >= 0
        other = attach_storage(st.export())
        assert not other.owner and other.export() == st.handle
        st.bytes(0, 4)[:] = 7
        assert bytes(other.host_buffer()[:4]) == b"\x07" * 4
        other.unlink()                                            # not the owner: a no-op
        other.close()
        other.close()
        assert st.handle.name in list_segments()
        assert shm.fence(st.device)() is None and shm.resolve("cpu", None, 1, 1) == "cpu"
        assert shm.local_index(shm.device_id(0)) == 0 and shm.device_count() == 1
    finally:
        st.unlink()
        st.unlink()
        st.close()
    assert st.handle.name not in list_segments()
    with pytest.raises(RuntimeError, match="closed"):
        st.bytes(0, 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a CUDA backend")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: the arena would be made")
def test_a_cuda_arena_without_a_device_fails_cleanly_and_leaves_nothing():
    before = set(list_segments())
    with pytest.raises(ConfigError, match="no CUDA device for an arena on cuda:0"):
        _arena([*control.specs(1), ("x", (4,), "float32")], device="cuda:0")
    assert set(list_segments()) == before                         # the host block was removed


def test_a_device_without_a_backend_fails_cleanly_and_leaves_nothing():
    before = set(list_segments())
    with pytest.raises(ConfigError, match="no storage backend for device meta"):
        _arena([*control.specs(1), ("x", (4,), "float32")], device="meta")
    assert set(list_segments()) == before


# ------------------------------------------------------------------------------------- counters
def test_counters_book_into_their_own_slot_only():
    ctrl = np.zeros(3, dtype=control.SLOT)
    c = Counters(ctrl[1])
    for tau, lr in ((0, 0.1), (3, 0.05), (9, 0.2)):
        c.applied(tau, lr)
    c.update()
    c.gradient(16, 1.5)
    c.count("dropped")
    assert int(ctrl[1]["applied"]) == 3 and int(ctrl[1]["updates"]) == 1
    assert int(ctrl[1]["stale_sum"]) == 12 and int(ctrl[1]["stale_max"]) == 9
    assert list(np.nonzero(ctrl[1]["stale_hist"])[0]) == [0, 2, 4]   # bins 0, 2-3, 8-15
    assert float(ctrl[1]["lr_min"]) == 0.05 and float(ctrl[1]["lr_max"]) == 0.2
    assert int(ctrl[1]["samples"]) == 16 and float(ctrl[1]["losses"][0]) == 1.5
    assert int(ctrl[1]["dropped"]) == 1
    assert not ctrl[0].tolist() == ctrl[1].tolist() and not any(ctrl[0]["stale_hist"]) and not ctrl[2]["grads"]


# ------------------------------------------------------------------------------------- stores
def test_summed_store_version_is_the_sum_of_the_learners_counters():
    ctrl = np.zeros(3, dtype=control.SLOT)
    x = torch.arange(4.0)
    store = SummedStore(x, {}, ctrl["updates"][:2])
    ctrl[0]["updates"], ctrl[1]["updates"], ctrl[2]["updates"] = 3, 4, 100   # slot 2 is not a learner
    dst = torch.zeros(4)
    assert store.read(dst) == 7 and torch.equal(dst, x)
    assert store.read(None) == 7


def test_seqlock_snapshots_are_consistent_under_concurrent_writes():
    """A writer thread sets every coordinate to its version; each read must see one version only."""
    glob = np.zeros(1, dtype=control.GLOBAL)
    x = torch.zeros(1_000_000)
    store = SeqlockStore(x, {}, glob[0])
    done, reading = threading.Event(), threading.Event()

    def writer():
        reading.wait(5)
        for _ in range(300):
            with store.writing() as v:
                x.fill_(float(v))
            time.sleep(0.0002)
        done.set()
    t = threading.Thread(target=writer)
    t.start()
    reading.set()
    dst, seen = torch.empty_like(x), set()
    while not done.is_set():
        v = store.read(dst)
        assert dst.min() == dst.max() == v, "a torn snapshot"
        seen.add(v)
    t.join()
    assert store.version() == 300 and int(glob[0]["seq"]) % 2 == 0
    assert len(seen) > 1


def test_seqlock_without_the_retry_would_tear():
    """The oracle of the test above can fail: a plain copy during writes does tear."""
    x = torch.zeros(2_000_000)
    stop = threading.Event()

    def writer():
        v = 0.0
        while not stop.is_set():
            v += 1
            x.fill_(v)
    t = threading.Thread(target=writer)
    t.start()
    try:
        torn = any(float((s := x.clone()).min()) != float(s.max()) for _ in range(200))
    finally:
        stop.set()
        t.join()
    assert torn


# ------------------------------------------------------------------------------------- mailbox
def test_mailbox_push_take_consume_and_reset():
    P, n = 2, 3
    arena = _arena([*control.specs(P + 1), *mailbox.specs(P, n, keep_params_read=True)])
    try:
        box = GradientMailbox(arena, P)
        c0 = Counters(arena.array("ctrl")[0])
        assert box.params_read is not None and box.in_flight() == 0
        for v in (5, 6):
            box.push(0, c0, torch.full((n,), float(v)), v, params=torch.full((n,), -v * 1.0))
        assert box.full(0) and not box.full(1) and box.in_flight() == RING
        got = list(box.arrivals())
        assert [(a.rank, a.version) for a in got] == [(0, 5), (0, 6)]
        assert [float(box.grad(a)[0]) for a in got] == [5.0, 6.0]
        assert float(box.params_of(got[1])[0]) == -6.0
        assert list(box.arrivals()) == []                     # each arrival is seen once
        box.consume(got[0])
        assert not box.full(0) and box.in_flight() == 1
        box.push(0, c0, torch.zeros(n), 7)
        assert [(a.rank, a.version) for a in box.arrivals()] == [(0, 7)]
        box.reset()                                           # drop everything in flight
        assert box.in_flight() == 0 and not box.full(0)
    finally:
        arena.close()


def test_mailbox_push_waits_for_a_free_slot_and_answers_a_stop():
    P, n = 1, 2
    arena = _arena([*control.specs(P + 1), *mailbox.specs(P, n, keep_params_read=False)])
    try:
        box = GradientMailbox(arena, P)
        c0 = Counters(arena.array("ctrl")[0])
        for v in range(RING):
            box.push(0, c0, torch.ones(n), v)

        class Stop(Exception):
            pass

        def stop():
            raise Stop
        with pytest.raises(Stop):                             # full ring: the wait checks stop
            box.push(0, c0, torch.ones(n), 9, wait=stop)
    finally:
        arena.close()


# ------------------------------------------------------------------------------------- wake-ups
def test_wakeups_release_drain_and_sliced_waits():
    w = WakeUps(mp.get_context("spawn"), 2)
    nothing = lambda: None  # noqa: E731
    assert not w.wait_release(0, nothing, timeout=0.05)
    w.release(1)
    w.release(1)
    assert not w.drain(0) and w.drain(1) and not w.drain(1)   # drain takes every pending release
    w.notify_push()
    w.wait_push(nothing)
    w.release_all()
    assert w.go.is_set() and w.drain(0) and w.drain(1)
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 3:
            raise TimeoutError
    with pytest.raises(TimeoutError):                         # a wait without timeout still checks
        wait_on(mp.get_context("spawn").Semaphore(0), check)
    assert len(calls) == 4
