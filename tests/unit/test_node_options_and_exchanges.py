"""Across nodes, without a network: the node options, the averaging math, the votes and the
exchanges against a scripted link (what the other node sends is given, in one process)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shmopt.config import Config
from shmopt.engine.control import GLOBAL, SLOT
from shmopt.engine.nodes.delta import DeltaExchange
from shmopt.engine.nodes.exchange import FLAGS
from shmopt.engine.nodes.leader import LeaderExchange
from shmopt.engine.nodes.reducing_io import GradientReducer
from shmopt.engine.roles import processes
from shmopt.errors import ConfigError
from shmopt.node_plan import node_path, parse_master, resolve_nodes, split_steps
from shmopt.plan import resolve
from shmopt.problems import load_problem
from shmopt.rules.averaging import delta_, merge_, outer_step_
from shmopt.strategies.nodes import finished, select_global
from shmopt.strategies.replicas import LeaderSGD

TCP = dict(nnodes=2, node_rank=0, master="127.0.0.1:29555")
TORCHRUN = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_WORLD_SIZE": "1"}


# ------------------------------------------------------------------ options
def nodes_of(env=None, algo="apam", **kw):
    c = Config(algo=algo, **kw)
    return resolve_nodes(c, "direct" if algo in ("apam", "hogwild") else algo, c.steps or 5000,
                         env=env or {})


def test_single_node_is_none_and_tcp_needs_rank_and_master():
    assert nodes_of() is None
    assert nodes_of(nnodes=1) is None
    plan = nodes_of(**TCP)
    assert (plan.nnodes, plan.rank, plan.master, plan.rendezvous) == (2, 0, ("127.0.0.1", 29555), "tcp")
    with pytest.raises(ConfigError, match="needs --node-rank R and --master HOST:PORT"):
        nodes_of(nnodes=2)
    with pytest.raises(ConfigError, match="need --nnodes >= 2"):
        nodes_of(node_rank=1)


def test_torchrun_environment_is_read_and_checked():
    plan = nodes_of(env=TORCHRUN)
    assert (plan.nnodes, plan.rank, plan.master, plan.rendezvous) == (2, 1, None, "torchrun")
    with pytest.raises(ConfigError, match="--nproc-per-node must be 1"):
        nodes_of(env={**TORCHRUN, "LOCAL_WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="torchrun says 2"):
        nodes_of(env=TORCHRUN, nnodes=3)
    with pytest.raises(ConfigError, match="--master is for runs without torchrun"):
        nodes_of(env=TORCHRUN, master="h:1")


@pytest.mark.parametrize("kw, match", [
    (dict(node_rank=2), r"node-rank=2: must be in 0..1"),
    (dict(master="host"), r"give HOST:PORT"),
    (dict(master="host:70000"), r"give HOST:PORT"),
    (dict(dist_timeout=0), r"dist-timeout=0"),
    (dict(exchange_every=0), r"exchange-every=0"),
    (dict(outer_lr=-1.0), r"outer-lr=-1.0"),
    (dict(outer_momentum=1.0), r"outer-momentum=1.0"),
    (dict(steps=1), r"steps=1: fewer than the 2 nodes"),
])
def test_bad_node_options_are_one_clear_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        nodes_of(**{**TCP, **kw})


def test_every_family_crosses_nodes_and_k_counts_the_gradients_of_all_nodes():
    logreg = load_problem("logreg")
    with pytest.raises(ConfigError, match="each node is one group"):
        resolve(Config(algo="lsgd", workers=4, groups=2, **TCP), logreg)
    plan = resolve(Config(algo="sync", workers=2, steps=100, **TCP), logreg)
    assert plan.steps == 100 and processes(plan) == 3      # sync: every update is global
    assert not plan.server.global_applier and plan.server.learners == 2    # an all-reduce
    plan = resolve(Config(algo="apam", workers=2, steps=101, **{**TCP, "node_rank": 1}), logreg)
    assert (plan.steps, plan.worker.rank_offset, processes(plan)) == (50, 2, 3)   # + the node link
    for algo, extra in (("k-async", {}), ("k-batch-sync", {}), ("apam", {"protocol": "server"})):
        plan = resolve(Config(algo=algo, workers=2, steps=100, **TCP, **extra), logreg)
        assert plan.server.global_applier and plan.server.learners == 4 and plan.steps == 100
    assert resolve(Config(algo="k-sync", workers=2, **TCP), logreg).k == 2     # P/2 of N·P = 4
    assert resolve(Config(algo="k-sync", workers=2, k=4, **TCP), logreg).k == 4
    with pytest.raises(ConfigError, match=r"invalid k=5: must be 1 <= k <= 4 \(--workers 2 on each "
                                          r"of 2 nodes"):
        resolve(Config(algo="k-sync", workers=2, k=5, **TCP), logreg)


def test_on_node_failure_continue_is_for_the_global_applier_only():
    logreg = load_problem("logreg")
    plan = resolve(Config(algo="k-async", workers=1, on_node_failure="continue", **TCP), logreg)
    assert plan.nodes.on_failure == "continue"
    for algo in ("apam", "sync", "easgd"):
        with pytest.raises(ConfigError, match="continue is for server protocols across nodes"):
            resolve(Config(algo=algo, workers=1, on_node_failure="continue", **TCP), logreg)
    with pytest.raises(ConfigError, match="invalid on-node-failure='maybe': choose one of stop, continue"):
        resolve(Config(algo="k-async", on_node_failure="maybe", **TCP), logreg)


def test_per_node_files_and_step_shares():
    assert node_path("run/ck.pt", 1) == "run/ck.node1.pt"
    assert node_path("ck-{node}.pt", 3) == "ck-3.pt"
    assert node_path(None, 1) is None
    assert [split_steps(11, 3, r) for r in range(3)] == [4, 4, 3]
    assert parse_master("[::1]:29500") == ("::1", 29500)


# ------------------------------------------------------------------ math and votes
def test_outer_step_is_averaging_or_nesterov_on_the_pseudo_gradient():
    d = torch.tensor([1.0, -2.0])
    assert torch.equal(outer_step_(d.clone(), None), d)
    b = torch.tensor([0.5, 0.5])
    lr, mu = 0.7, 0.9
    want_b = mu * b + (-d)
    want = -lr * ((-d) + mu * want_b)
    got = outer_step_(d.clone(), b, lr, mu)
    assert torch.allclose(got, want) and torch.allclose(b, want_b)


def test_merge_keeps_the_updates_made_during_the_exchange():
    x_sync = torch.zeros(3)
    x = torch.tensor([1.0, 2.0, 3.0])
    sent = delta_(torch.empty(3), x, x_sync)             # d taken when the exchange starts
    x += torch.tensor([0.5, 0.0, -1.0])                  # local updates while it is in flight
    step = torch.tensor([0.2, 0.2, 0.2])                 # the averaged delta that came back
    merge_(x, x_sync, sent, step)
    assert torch.allclose(x, torch.tensor([0.7, 0.2, -0.8]))     # x_s + s + the late updates
    assert torch.allclose(x_sync, step)


def test_votes_and_global_leader():
    assert not finished(1, 0, 2) and finished(2, 0, 2) and finished(0, 1, 3)
    rows = [[0.5, 0, 1], [0.3, 1, 0], [0.3, 2, 4], [math.nan, 3, 0]]
    assert select_global(rows) == (1, 0, 0.3)           # lowest score, ties to the lowest node
    assert select_global([[math.inf, 0, 2], [math.nan, 1, 0]])[:2] == (0, 2)


# ------------------------------------------------------------------ exchanges on a scripted link
class ScriptedLink:
    """One node of two; the other node's contribution is scripted; ``during`` runs while the
    collective is "in flight" (the local workers' updates)."""

    def __init__(self, rank=0, peer=None, peer_row=None, during=None):
        self.rank, self.nnodes = rank, 2
        self.peer, self.peer_row, self.during = peer, peer_row, during
        self.broadcasts = []

    def all_reduce_(self, t, what):
        if self.during:
            self.during()
        t += self.peer
        return t

    def broadcast_(self, t, src, what):
        self.broadcasts.append(src)
        return t

    def all_gather(self, t, what):
        rows = [t, torch.tensor(self.peer_row, dtype=t.dtype)]
        return torch.stack(rows if self.rank == 0 else rows[::-1])


def test_delta_exchange_averages_and_keeps_local_updates_then_ends_identical():
    x = torch.tensor([1.0, 1.0])
    peer = torch.tensor([3.0, -1.0, 1.0, 0.0, 500.0])     # the peer's delta, done, halt, updates
    link = ScriptedLink(peer=peer, during=lambda: x.add_(torch.tensor([0.1, 0.0])))
    ex = DeltaExchange(link, [x])
    ex.initial()                                         # consensus = x = (1, 1)
    x += torch.tensor([1.0, 1.0])                        # 10 local updates' worth: d = (1, 1)
    vote = ex.exchange(done=False, halt=False, updates=400)
    assert (vote.n_done, vote.n_halt, vote.all_updates) == (1.0, 0.0, 900)
    mean = torch.tensor([2.0, 0.0])                      # ((1, 1) + (3, -1)) / 2
    assert torch.allclose(ex.sync[0], torch.tensor([1.0, 1.0]) + mean)
    assert torch.allclose(x, ex.sync[0] + torch.tensor([0.1, 0.0]))   # the late update survives
    link.during, link.peer = None, torch.zeros(2 + FLAGS)
    ex.exchange(done=True, halt=False, updates=400, final=True)
    assert torch.equal(x, ex.sync[0])                    # final: the consensus, bit for bit


def test_leader_exchange_publishes_the_best_replica_of_all_nodes():
    P, n = 2, 3
    X = torch.arange(P * n, dtype=torch.float32).reshape(P, n)
    G = torch.zeros(2, n)
    glob = np.zeros(1, GLOBAL)[0]
    ctrl = np.zeros(P + 1, SLOT)
    ctrl["losses"][0, :] = 0.9
    ctrl["losses"][1, :] = 0.2                           # worker 1 leads this node
    ctrl["loss_count"][:P] = 10
    link = ScriptedLink(rank=0, peer_row=[0.5, 1, 0, 0, 0, 10])   # node 1's leader: worse
    method = LeaderSGD(workers=P, tau=1, trigger="worker", independent_init=False, window=10)
    ex = LeaderExchange(link, X, G, glob, lambda: method.local_leader(ctrl["losses"][:P], ctrl["loss_count"][:P]))
    vote = ex.exchange(done=False, halt=False, updates=20)
    assert (int(glob["gl_node"]), int(glob["gl_worker"])) == (0, 1)
    assert math.isclose(glob["gl_score"], 0.2, rel_tol=1e-6) and glob["gl_version"] == 1
    assert torch.equal(G[int(glob["gl_index"])], X[1])   # this node sent its leader's replica
    assert link.broadcasts == [0] and vote.all_updates == 30
    link.peer_row = [0.1, 1, 0, 1, 0, 10]                # now node 1's leader is the best
    ex.exchange(done=False, halt=False, updates=20)
    assert (int(glob["gl_node"]), int(glob["gl_worker"]), glob["gl_version"]) == (1, 0, 2)
    assert link.broadcasts == [0, 1]                     # received from node 1


def test_gradient_reducer_is_the_mean_over_every_nodes_gradients():
    g = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])]
    peer = torch.tensor([10.0, 20.0, 1.0, 1.0, 7.0])     # one gradient summed; it votes halt
    red = GradientReducer(ScriptedLink(peer=peer), 2)
    mean = red.mean(g, halt=False, updates=7)
    assert torch.allclose(mean, torch.tensor([14.0 / 3, 26.0 / 3])) and red.stop


def test_delta_exchange_of_several_buffers_averages_each_and_the_outer_step_applies():
    x, m = torch.zeros(2), torch.ones(3)            # parameters and a moment (--sync-state)
    peer = torch.tensor([2.0, 2.0, 3.0, 3.0, 3.0, 0.0, 0.0, 10.0])
    ex = DeltaExchange(ScriptedLink(peer=peer), [x, m], outer_lr=0.5)
    ex.initial()
    ex.exchange(done=False, halt=False, updates=10)
    assert torch.allclose(x, torch.full((2,), 0.5))    # mean delta 1, outer lr 0.5
    assert torch.allclose(m, torch.full((3,), 1.75))   # 1 + 0.5 * 1.5
