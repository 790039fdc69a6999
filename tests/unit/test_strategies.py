"""Strategy decisions with scripted arrival orders: no processes."""
from __future__ import annotations

import math

import pytest

from shmopt.engine.control import HIST_BINS, bin_label, staleness_bin
from shmopt.errors import ConfigError
from shmopt.strategies import ALGORITHMS, KAggregator, WorkerMode, get_algorithm, make_lr_policy
from shmopt.strategies.server import Arrival


def play(variant, P, K, arrivals, max_staleness=None):
    """Feed arrivals (rank, version_read); apply whenever ready. Returns the decisions, verdicts."""
    agg = KAggregator(variant, P, K, max_staleness)
    version, decisions, verdicts = 0, [], []
    for rank, v in arrivals:
        verdicts.append(agg.offer(Arrival(rank, v), version))
        while agg.ready():
            d = agg.take(version)
            decisions.append(d)
            version += 1
    return decisions, verdicts, agg


def test_fully_sync_averages_all_p_fresh_gradients_and_releases_everyone():
    ds, verdicts, _ = play("k-sync", 3, 3, [(2, 0), (0, 0), (1, 0), (1, 1), (0, 1), (2, 1)])
    assert [sorted(a.rank for a in d.batch) for d in ds] == [[0, 1, 2], [0, 1, 2]]
    assert all(d.staleness == [0, 0, 0] and d.release == [0, 1, 2] for d in ds)
    assert verdicts == ["accepted"] * 6


def test_k_sync_takes_first_k_distinct_learners_and_cancels_the_rest():
    # P=4, K=2: ranks 3 and 1 finish first on version 0; 0 and 2 were still computing on 0
    ds, verdicts, agg = play("k-sync", 4, 2, [(3, 0), (1, 0), (0, 0), (2, 1), (0, 1)])
    assert [a.rank for a in ds[0].batch] == [3, 1] and ds[0].release == [0, 1, 2, 3]
    assert verdicts[2] == "obsolete"          # rank 0's gradient on version 0 came too late
    assert [a.rank for a in ds[1].batch] == [2, 0] and ds[1].staleness == [0, 0]
    assert agg.mode is WorkerMode.WAIT and agg.synchronous


def test_k_batch_sync_counts_mini_batches_from_the_same_learner():
    ds, verdicts, agg = play("k-batch-sync", 3, 3, [(0, 0), (0, 0), (1, 0), (2, 0), (2, 1)])
    assert [a.rank for a in ds[0].batch] == [0, 0, 1]     # learner 0 contributed two batches
    assert ds[0].release == [0, 1, 2]
    assert verdicts[3] == "obsolete"                     # rank 2 on version 0 after the update
    assert agg.mode is WorkerMode.SAME


def test_k_batch_sync_discards_pending_beyond_k_at_the_update():
    agg = KAggregator("k-batch-sync", 2, 1)
    assert agg.offer(Arrival(0, 0), 0) == "accepted"
    assert agg.offer(Arrival(1, 0), 0) == "accepted"      # both arrived before the server looked
    d = agg.take(0)
    assert [a.rank for a in d.batch] == [0] and [a.rank for a in d.discarded] == [1]
    assert agg.pending == []


def test_k_async_keeps_stale_gradients_and_releases_only_the_pushers():
    # P=3, K=2: ranks 0,1 push on v0 -> update 1; rank 2 (computing on v0) pushes later, stale
    ds, verdicts, _ = play("k-async", 3, 2, [(0, 0), (1, 0), (2, 0), (0, 1)])
    assert ds[0].release == [0, 1] and ds[0].staleness == [0, 0]
    assert [a.rank for a in ds[1].batch] == [2, 0] and ds[1].staleness == [1, 0]
    assert ds[1].release == [0, 2]
    assert verdicts == ["accepted"] * 4


def test_k_async_with_k1_is_async_sgd():
    ds, _, agg = play("k-async", 2, 1, [(0, 0), (1, 0), (0, 1), (1, 1)])
    assert [d.staleness for d in ds] == [[0], [1], [1], [2]]
    assert [d.release for d in ds] == [[0], [1], [0], [1]]


def test_k_batch_async_never_makes_anyone_wait():
    ds, _, agg = play("k-batch-async", 2, 2, [(0, 0), (0, 0), (1, 0), (0, 1)])
    assert agg.mode is WorkerMode.PULL
    assert all(d.release == [] for d in ds)
    assert [a.rank for a in ds[0].batch] == [0, 0] and [a.rank for a in ds[1].batch] == [1, 0]
    assert ds[1].staleness == [1, 0]


def test_max_staleness_drops_and_never_applies_a_stale_gradient():
    ds, verdicts, _ = play("k-async", 3, 1, [(0, 0), (1, 0), (2, 0), (0, 1)], max_staleness=1)
    assert verdicts == ["accepted", "accepted", "stale", "accepted"]
    assert all(max(d.staleness) <= 1 for d in ds)


def test_a_pending_gradient_made_too_stale_by_other_updates_expires():
    agg = KAggregator("k-batch-async", 2, 2, max_staleness=1)
    assert agg.offer(Arrival(0, 5), 5) == "accepted"    # pending, waiting for a second one
    assert agg.expire(6) == [] and agg.expire(7) == [Arrival(0, 5)] and not agg.pending


def test_a_refused_k_async_learner_must_be_woken_the_synchronous_ones_need_not():
    assert KAggregator("k-async", 2, 1).wakes_refused
    assert not any(KAggregator(v, 2, 1).wakes_refused for v in ("k-sync", "k-batch-sync", "k-batch-async"))


def test_retired_learners_lose_their_pending_gradients_and_are_released_no_more():
    agg = KAggregator("k-sync", 4, 2)                 # 2 nodes x 2 learners, ids node * 2 + rank
    agg.offer(Arrival(2, 0), 0)
    assert agg.retire([2, 3]) == [Arrival(2, 0)] and agg.live == [0, 1]
    assert agg.offer(Arrival(3, 0), 0) == "obsolete"  # a late message from the lost node
    agg.offer(Arrival(0, 0), 0)
    agg.offer(Arrival(1, 0), 0)
    assert agg.take(0).release == [0, 1]
    with pytest.raises(ValueError, match="K=2 needs 2 live learner"):
        agg.retire([1])
    assert KAggregator("k-batch-sync", 2, 2).retire([1]) == []    # K mini-batches: one learner will do


def test_distinct_learner_variants_refuse_a_double_push():
    agg = KAggregator("k-sync", 3, 2)
    agg.offer(Arrival(0, 0), 0)
    with pytest.raises(RuntimeError, match="pushed twice"):
        agg.offer(Arrival(0, 0), 0)


@pytest.mark.parametrize("variant,k,msg", [("k-sync", 0, "1 <= k <= workers"),
                                           ("k-async", 5, "1 <= k <= workers (4)"),
                                           ("k-fast", 1, "unknown variant")])
def test_aggregator_validation(variant, k, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        KAggregator(variant, 4, k)


def test_lr_policies():
    assert make_lr_policy("constant")(0.1, 7) == 0.1
    st = make_lr_policy("staleness")
    assert st(0.1, 0) == 0.1 and st(0.1, 1) == 0.1 and st(0.1, 4) == pytest.approx(0.025)
    d = make_lr_policy("dutta", c=0.01, eta_max=0.5)
    assert d(0.1, 3, 0.0) == 0.5                       # fresh: eta_max
    assert d(0.1, 3, 0.1) == pytest.approx(0.1)        # C / ||dw||^2
    assert d(0.1, 3, 1e-6) == 0.5                      # capped
    assert make_lr_policy("dutta", c=1.0)(0.2, 1, 1e-9) == 0.2   # eta_max defaults to the base lr
    assert d.needs_distance and not st.needs_distance


@pytest.mark.parametrize("kw,msg", [
    (dict(name="fancy"), "invalid lr-policy='fancy': choose one of constant, staleness, dutta"),
    (dict(name="dutta"), "needs --lr-c"),
    (dict(name="dutta", c=0.0), "invalid lr-c=0.0"),
    (dict(name="dutta", c=-1.0), "invalid lr-c=-1.0"),
    (dict(name="dutta", c=1.0, eta_max=math.inf), "invalid lr-max=inf"),
    (dict(name="staleness", c=1.0), "belong to the dutta"),
])
def test_lr_policy_validation(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        make_lr_policy(**kw)


def test_staleness_histogram_bins():
    assert [staleness_bin(t) for t in (0, 1, 2, 3, 4, 7, 8)] == [0, 1, 2, 2, 3, 3, 4]
    assert staleness_bin(10**9) == HIST_BINS - 1
    assert [bin_label(b) for b in range(4)] == ["0", "1", "2-3", "4-7"]


def test_algorithm_registry():
    assert list(ALGORITHMS) == ["hogwild", "apam", "sync", "k-sync", "k-batch-sync", "k-async",
                                "k-batch-async", "lsgd", "easgd", "local-sgd"]
    assert get_algorithm("apam").protocols == ("direct", "server")
    assert get_algorithm("sync").k == "P" and not get_algorithm("sync").asynchronous
    with pytest.raises(ConfigError, match="unknown algorithm 'adamw': choose one of"):
        get_algorithm("adamw")
