"""shmopt.weights: a learner publishes versions of its weights, readers in other processes copy
whole versions (never a torn mix, while the publisher hammers), wait with a bound, see their
staleness, and get a clear error, not a hang, when the publisher is gone."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest
import torch
from torch import nn

import shmopt
from shmopt.errors import ConfigError
from shmopt.memory import list_segments
from shmopt.weights import PublisherGone


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.BatchNorm1d(512), nn.Linear(512, 256))


def _fill(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.fill_(value)


def _whole(model: nn.Module) -> set[float]:
    return {float(v) for t in model.state_dict().values() if t.is_floating_point() for v in t.unique()}


def _reader(name: str, reads: int, out) -> None:
    """Read ``reads`` ever newer versions; report (versions, reads that were not one version)."""
    reader, model = shmopt.weights.attach(name), _net()
    versions, torn = [], 0
    for _ in range(reads):
        v = reader.read_into(model, min_version=(versions[-1] + 1 if versions else 1), timeout=60)
        seen = _whole(model)
        torn += seen != {float(v)}
        versions.append(v)
    reader.close()
    out.put((versions, torn))


def test_reads_are_whole_versions_while_the_publisher_hammers():
    model = _net()
    with shmopt.weights.publish(model) as pub:
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_reader, args=(pub.name, 40, out)) for _ in range(3)]
        for p in procs:
            p.start()
        results = []
        v = pub.version
        while len(results) < len(procs):
            _fill(model, float(v + 1))               # every tensor holds its version's number
            v = pub.publish()
            while not out.empty():
                results.append(out.get())
            if any(p.exitcode not in (None, 0) for p in procs):
                break
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        for versions, torn in results:
            assert torn == 0 and len(versions) == 40
            assert all(b > a for a, b in zip(versions, versions[1:]))     # each read a newer version


def test_a_reader_waits_with_a_bound_and_the_learner_sees_its_staleness():
    model = _net()
    with shmopt.weights.publish(model) as pub:
        reader = shmopt.weights.attach(pub.name)
        other = _net()
        _fill(model, 3.0)
        assert pub.publish() == 2 and reader.read_into(other) == 2 and _whole(other) == {3.0}
        pub.publish()
        pub.publish()
        (me,) = pub.readers()
        assert me["pid"] == os.getpid() and me["version"] == 2 and me["staleness"] == 2
        with pytest.raises(TimeoutError, match=r"version 9 was not published within 0.05 s \(newest: 4\)"):
            reader.read_into(other, min_version=9, timeout=0.05)
        with pytest.raises(ConfigError, match="does not match the published weights"):
            reader.read_into(nn.Linear(2, 2))
        reader.close()
        assert pub.readers() == []
    with pytest.raises(PublisherGone, match="no published weights named"):
        shmopt.weights.attach(pub.name)
    with pytest.raises(ConfigError, match="is not the name of published weights"):
        shmopt.weights.attach("model.pt")


def _publish_then_wait(out) -> None:
    pub = shmopt.weights.publish(_net())
    out.put(pub.name)
    signal.pause()


def test_a_reader_whose_publisher_is_killed_gets_an_error_not_a_hang():
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_publish_then_wait, args=(out,))
    p.start()
    name = out.get(timeout=60)
    reader = shmopt.weights.attach(name)
    assert reader.read_into(_net()) == 1
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    with pytest.raises(PublisherGone, match=rf"publisher of weights {name} \(pid {p.pid}\) is gone"):
        reader.read_into(_net(), min_version=2)               # no timeout: it must not hang
    reader.close()
    from shmopt.memory import sweep_stale_segments
    sweep_stale_segments()
    assert name not in list_segments()


def test_a_closed_publisher_is_gone_for_its_readers():
    pub = shmopt.weights.publish(_net())
    reader = shmopt.weights.attach(pub.name)
    pub.close()
    with pytest.raises(PublisherGone):
        reader.read_into(_net(), min_version=2, timeout=5)
    reader.close()
    assert pub.name not in list_segments()


class _Ranker(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(1000, 8, sparse=True)
        self.head = nn.Linear(8, 1)


def test_tables_publish_and_read_only_their_changed_rows():
    torch.manual_seed(0)
    learner, actor = _Ranker(), _Ranker()
    with shmopt.weights.publish(learner) as pub:
        assert [t["name"] for t in pub.tables] == ["emb.weight"]
        reader = shmopt.weights.attach(pub.name)
        assert reader.read_into(actor, delta=True) == 1 and reader.rows_only == 0     # the first: whole
        g = torch.Generator().manual_seed(1)
        for _ in range(8):
            rows = torch.randint(1000, (20,), generator=g)
            with torch.no_grad():
                learner.emb.weight[rows] += 1.0
                learner.head.weight += 0.5
            v = pub.publish(rows={"emb.weight": rows})
            assert reader.read_into(actor, delta=True) == v
            assert torch.equal(actor.emb.weight, learner.emb.weight)
            assert torch.equal(actor.head.weight, learner.head.weight)
        assert reader.rows_only == 8                          # every read after the first: rows only
        other = _Ranker()                                     # another model: a whole copy
        assert reader.read_into(other, delta=True) == pub.version and reader.rows_only == 8
        assert torch.equal(other.emb.weight, learner.emb.weight)
        with torch.no_grad():                                 # a change not declared is not copied
            learner.emb.weight[0] = -7.0
        pub.publish(rows={"emb.weight": torch.tensor([5])})
        reader.read_into(other)
        assert other.emb.weight[0, 0].item() != -7.0          # the slot took only the declared rows
        with pytest.raises(ConfigError, match="not one of the published tables"):
            pub.publish(rows={"head.weight": [0]})
        with pytest.raises(ConfigError, match=r"row indices must be in 0..999"):
            pub.publish(rows={"emb.weight": [1000]})
        reader.close()
