"""Adaptive K (--k adaptive, issue #15) without a run: the schedule as a pure function, K changes in
the aggregator with gradients pending, the plan, refusals, and the progress line."""
from __future__ import annotations

import io
import math
import os
import random

import pytest

import shmopt
from shmopt.cli import main
from shmopt.engine.record import Sample
from shmopt.errors import ConfigError
from shmopt.memory.shm import list_segments, owner_pid
from shmopt.plan import resolve
from shmopt.problems import load_problem
from shmopt.progress import Progress, progress_line
from shmopt.strategies.adaptive_k import KSchedule, KTracker, k_ladder, ladder_from_times, next_k, parse_k
from shmopt.strategies.server import Arrival, KAggregator
from shmopt.strategies.theory import harmonic

LADDER = (1, 2, 3, 4)


def ks(schedule: KSchedule, losses) -> list[int]:
    t = KTracker(schedule)
    return [t.observe(x) for x in losses]


# ------------------------------------------------------------------ the schedule, pure
def test_k_rises_after_patience_evaluations_without_improvement():
    s = KSchedule(LADDER, patience=3, tol=1e-3)
    losses = [1.0, 0.9, 0.8] + [0.8] * 3 + [0.7] + [0.7] * 3
    out = ks(s, losses)
    assert out[:5] == [1] * 5                       # two flat evaluations: not yet
    assert out[5] == 2                              # the third: the floor of K = 1
    assert out[6:9] == [2, 2, 2]                    # an improvement restarts the count
    assert out[9] == 3


def test_a_steadily_improving_loss_keeps_the_start_k():
    s = KSchedule(LADDER, patience=2, tol=1e-3)
    losses = [1.0 * 0.99 ** i for i in range(50)]   # 1% better each time, above tol
    assert set(ks(s, losses)) == {1}


def test_improvements_smaller_than_tol_count_as_a_plateau():
    s = KSchedule(LADDER, patience=2, tol=1e-2)
    losses = [1.0 * 0.999 ** i for i in range(3)]   # 0.1% better: below a 1% tolerance
    assert ks(s, losses)[-1] == 2


def test_nan_and_missing_losses_are_no_improvement():
    s = KSchedule(LADDER, patience=2)
    assert ks(s, [1.0, math.nan, None]) == [1, 1, 2]


def test_k_never_falls_never_exceeds_p_and_is_deterministic():
    rng = random.Random(7)
    for _ in range(50):
        ladder = ladder_from_times([rng.uniform(0.001, 0.1) * (i + 1) for i in range(8)])
        s = KSchedule(ladder, patience=rng.randint(1, 4), tol=rng.choice([0.0, 1e-3, 1e-2]))
        losses = [rng.choice([None, math.nan, rng.uniform(0.1, 2.0)]) for _ in range(rng.randint(1, 80))]
        out = ks(s, losses)
        assert all(b >= a for a, b in zip(out, out[1:]))            # never falls
        assert all(1 <= k <= 8 and k in ladder for k in out)        # never beyond P
        assert out == ks(s, list(losses))                           # same history, same K
        assert s.k_after(losses) == out[-1]
        assert [s.k_after(losses[:i + 1]) for i in range(len(losses))] == out


def test_a_long_plateau_ends_at_p_and_stays_there():
    s = KSchedule((1, 2, 4), patience=1)
    assert ks(s, [1.0] * 10) == [1, 2, 4, 4, 4, 4, 4, 4, 4, 4]


def test_resumed_tracker_continues_from_the_checkpoint_k():
    s = KSchedule(LADDER)
    assert KTracker.resumed(s, 3).k == 3
    assert KTracker.resumed(s, 0).k == 1            # a fresh control block: the start
    assert KTracker.resumed(KSchedule((1, 3, 4)), 2).k == 1


def test_next_k_maximises_the_progress_per_second_after_the_floor():
    # exponential delays: E[T_K] = (H_P - H_{P-K}) / mu (mu cancels)
    P = 6
    times = [harmonic(P) - harmonic(P - k) for k in range(1, P + 1)]
    for k in range(1, P):
        rate = {kk: (1 / k - 1 / kk) / times[kk - 1] for kk in range(k + 1, P + 1)}
        assert next_k(k, times) == max(rate, key=rate.get)
    assert k_ladder("k-sync", 4, "exp:0.02") == (1, 2, 3, 4)
    assert next_k(2, [0.0] * 5) == 3                # no delay law: one step


def test_a_constant_delay_part_makes_the_ladder_climb_faster():
    exp, shifted = k_ladder("k-sync", 8, "exp:0.02"), k_ladder("k-sync", 8, "shifted-exp:0.01:0.02")
    assert exp[0] == shifted[0] == 1 and exp[-1] == shifted[-1] == 8
    assert shifted[1] > exp[1] and len(shifted) < len(exp)
    assert k_ladder("k-async", 8, "pareto:0.002:1.5") == k_ladder("k-async", 8, "pareto:0.002:1.5")
    assert k_ladder("k-sync", 3, "none") == (1, 2, 3)


def test_compare_takes_adaptive_k():
    from shmopt.compare import label, parse_algos
    assert parse_algos("k-sync:1,k-sync:adaptive") == [("k-sync", 1), ("k-sync", "adaptive")]
    assert label("k-sync", "adaptive") == "k-sync (K=adaptive)"
    with pytest.raises(ConfigError, match="positive integer or adaptive"):
        parse_algos("k-sync:fast")


def test_parse_k():
    assert parse_k(None) is None and parse_k("adaptive") == "adaptive"
    assert parse_k("3") == 3 and parse_k(2) == 2
    for bad in ("0", "x", 0, -1, 2.5, True, "Adaptive"):
        with pytest.raises(ConfigError, match="adaptive"):
            parse_k(bad)


# ------------------------------------------------------------------ K changes in the aggregator
def test_k_changes_with_gradients_pending_lose_nothing():
    agg = KAggregator("k-async", 4, 3)
    for r in (0, 1):
        assert agg.offer(Arrival(r, 0), 0) == "accepted"
    assert not agg.ready()
    agg.resize(2)                                   # shrinks below the pending count: ready now
    d = agg.take(0)
    assert [a.rank for a in d.batch] == [0, 1] and d.release == [0, 1] and not agg.pending
    agg.offer(Arrival(2, 0), 1)
    agg.resize(4)                                   # grows: waits for more, keeps what it had
    assert not agg.ready() and [a.rank for a in agg.pending] == [2]
    for r in (0, 1, 3):
        agg.offer(Arrival(r, 1), 1)
    assert agg.ready() and len(agg.take(1).batch) == 4

    sync = KAggregator("k-sync", 4, 4)
    for r in range(3):
        sync.offer(Arrival(r, 5), 5)
    sync.resize(2)
    d = sync.take(5)                                # the extra one is obsolete at the new version
    assert len(d.batch) == 2 and len(d.discarded) == 1 and d.release == [0, 1, 2, 3]
    for bad in (0, 5):
        with pytest.raises(ValueError, match="invalid k"):
            sync.resize(bad)


# ------------------------------------------------------------------ plan and refusals
@pytest.fixture(scope="module")
def logreg():
    return load_problem("logreg")


def test_plan_resolves_the_ladder(logreg):
    p = resolve(shmopt.Config(algo="k-sync", workers=4, k="adaptive", delay="exp:0.02"), logreg)
    assert p.k == 1 and p.server.adaptive.ladder == (1, 2, 3, 4) and p.server.adaptive.patience == 3
    p = resolve(shmopt.Config(algo="k-async", workers=3, k="adaptive", k_patience=5), logreg)
    assert p.server.adaptive.ladder == (1, 2, 3) and p.server.adaptive.patience == 5
    assert resolve(shmopt.Config(algo="k-sync", workers=4, k="2"), logreg).server.adaptive is None


def _mine() -> list[str]:
    return [n for n in list_segments() if owner_pid(n) == os.getpid()]


@pytest.mark.parametrize("args, needle", [
    (["--algo", "sync", "--k", "adaptive"], "--k adaptive is for k-sync and k-async only, not sync"),
    (["--algo", "k-batch-async", "--k", "adaptive"], "not k-batch-async"),
    (["--algo", "apam", "--protocol", "server", "--k", "adaptive"], "not apam"),
    (["--algo", "hogwild", "--k", "adaptive"], "--k applies to server protocols"),
    (["--algo", "k-sync", "--k", "fast"], "invalid k='fast'"),
    (["--algo", "k-sync", "--k", "adaptive", "--k-patience", "0"], "invalid k-patience=0"),
    (["--algo", "k-sync", "--k", "2", "--k-patience", "2"], "--k-patience applies to --k adaptive only"),
    (["--algo", "k-async", "--k", "adaptive", "--nnodes", "2", "--node-rank", "0", "--master",
      "127.0.0.1:29493"], "--k adaptive runs on one node only"),
])
def test_refusals_are_one_line_and_exit_2(args, needle, capsys):
    before = _mine()
    with pytest.raises(SystemExit) as info:
        main(["run", "logreg", "-w", "4", *args])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and needle in err and len(err.splitlines()) == 1
    assert _mine() == before


# ------------------------------------------------------------------ real runs


# ------------------------------------------------------------------ the progress line
def test_progress_line_against_a_time_limit_has_no_eta():
    line = progress_line(7.5, 1500, time_limit=15.0, loss=0.451234, accuracy=0.8125)
    assert "7.5/15.0 s" in line and "1,500 updates" in line and "200 updates/s" in line
    assert "[" + "#" * 10 + "-" * 10 + "]" in line
    assert "loss 0.45123" in line and "accuracy 0.8125" in line and "left" not in line


def test_progress_line_against_steps_estimates_the_time_left():
    line = progress_line(2.0, 1000, steps=5000, loss=None, k=3)
    assert "1,000/5,000 updates" in line and "500 updates/s" in line and "~8 s left" in line
    assert "[" + "#" * 4 + "-" * 16 + "]" in line and "K 3" in line and "loss" not in line
    both = progress_line(9.0, 4500, steps=5000, time_limit=10.0)
    assert "[" + "#" * 18 + "-" * 2 + "]" in both and "left" not in both      # the nearer end
    bare = progress_line(0.0, 0)
    assert "[" not in bare and "0 updates/s" in bare and "0.0 s" in bare


def test_progress_redraws_one_line():
    out = io.StringIO()
    bar = Progress(None, 15.0, show_k=True, out=out)
    bar.sample(Sample(3.0, 300, 0.5, 0.0, 0.0, 0, 0, metrics={"accuracy": 0.9}, k=2))
    bar.sample(Sample(6.0, 700, 0.4, 0.0, 0.0, 0, 0, k=2))
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "6.0/15.0 s" in text and "K 2" in text
