"""shmopt.weights across nodes: two fake nodes linked by gloo over 127.0.0.1 publish together; the
learner's node's weights land in the other node's arena under the same version, where a local
reader reads them."""
from __future__ import annotations

import multiprocessing as mp
import os

import torch
from loopback_nodes import free_port
from torch import nn

import shmopt


def _node(rank: int, port: int, out) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=2)
    model = nn.Linear(64, 32)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(10.0 if rank == 0 else -1.0)        # only node 0's weights may be published
    pub = shmopt.weights.publish(model, group=torch.distributed.group.WORLD, src=0)
    with torch.no_grad():
        model.weight.fill_(20.0 if rank == 0 else -2.0)
    v = pub.publish()
    reader, local = shmopt.weights.attach(pub.name), nn.Linear(64, 32)   # this node's own reader
    got = reader.read_into(local)
    out.put((rank, v, got, float(local.weight.min()), float(local.weight.max()), float(local.bias.max())))
    reader.close()
    pub.close()
    torch.distributed.destroy_process_group()


def test_the_learner_nodes_weights_reach_every_nodes_readers():
    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_node, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert results == [(0, 2, 2, 20.0, 20.0, 10.0), (1, 2, 2, 20.0, 20.0, 10.0)]
