"""Resuming a run across nodes with another node count, a run across nodes on one node, and a
one-node run across nodes.

Across N nodes each node writes its own checkpoint file, named from ``--checkpoint PATH`` by
:func:`~shmopt.node_plan.node_path` (``run.node0.ckpt``, ``run.node1.ckpt``, ... in one folder),
each recording the node count and its rank. ``--resume PATH`` (the same PATH) finds them:

* the same node count and worker count: each node resumes its own file;
* otherwise every node reads every old node's file and :func:`merge` makes one checkpoint of
  L = N x P learners: node 0's model and rule state (a job across nodes starts from node 0's,
  broadcast to every node, so that is what a resume with the same count does too), every
  learner's control slot and order in the order of their global ranks, node 0's rank-P slot and
  the global applier's book. :mod:`.reshard` then maps old learner l to new learner l mod L', so
  counters, the global version and the data position go on as they do at another worker count.

The files are mapped (``torch.load(mmap=True)``): of the other nodes' files only the control
block and the orders are read, after the digest check.

Not torch.distributed.checkpoint: its ``save`` is a collective of the process group, which here
belongs to the node links, while each node's supervisor writes its checkpoints on its own
schedule and without blocking training; its ``.metadata`` and non-tensor values are read by plain
unpickling (a shmopt checkpoint is read with ``weights_only=True``: no code runs); and it
overwrites a checkpoint in place, where a failed save can leave a mix of old and new shards
(shmopt renames a whole file over the last good one).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import ConfigError
from ..node_plan import node_path
from ..plan import Plan
from . import checkpoint, reshard
from .control import SLOT
from .layout import ORDER
from .reshard import CTRL, saved_nodes

IDENTITY = ("algo", "rule", "protocol", "variant", "k", "workers", "parameters", "model", "data")


def node_files(path: str) -> list[str]:
    """The files a run across nodes wrote under ``path`` (node 0's first), or [] when there are none."""
    first = node_path(path, 0)
    if not os.path.isfile(first):
        return []
    doc = checkpoint.load(first, mmap=True)
    files = [node_path(path, r) for r in range(saved_nodes(doc))]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ConfigError(f"checkpoint {path!r} was written by {len(files)} nodes and {missing[0]!r} is "
                          f"missing: copy every node's file into one folder to resume at another node count")
    return files


def load_for(path: str, plan: Plan) -> tuple[dict, str]:
    """The checkpoint a run with ``plan`` resumes from ``--resume path``, merged from every node's file
    when the node or worker count changed; and the path to name in messages."""
    nodes, rank = plan.nnodes, plan.node_rank
    files = node_files(path) if nodes > 1 or not os.path.isfile(path) else []
    if not files:                                           # one node's file, on one node or on each
        doc = checkpoint.load(path)
        if saved_nodes(doc) > 1:
            raise ConfigError(f"checkpoint {path!r} is node {doc.get('node', '?')}'s file of a run across "
                              f"{saved_nodes(doc)} nodes: give --resume the path given to --checkpoint, so "
                              f"that every node's file is read")
        reshard.check(doc, path, plan)
        return doc, path
    own = node_path(path, rank)
    if len(files) == nodes:
        doc = checkpoint.load(own)
        if doc.get("workers") == plan.workers:
            return doc, own                                 # the same counts: each node its own file
    docs = [checkpoint.load(f, mmap=True) for f in files]
    reshard.check(docs[0], path, plan)
    return merge(docs), path


def merge(docs: list[dict]) -> dict:
    """One checkpoint of every node's learners (see the module's text)."""
    first = docs[0]
    for r, doc in enumerate(docs):
        if doc.get("node", r) != r or saved_nodes(doc) != len(docs):
            raise ConfigError(f"the node files of this checkpoint come from different runs (file {r} is "
                              f"node {doc.get('node')} of {saved_nodes(doc)})")
        if any(doc.get(k) != first.get(k) for k in IDENTITY):
            raise ConfigError("the node files of this checkpoint come from different runs")
    p = int(first["workers"])
    ctrls = [np.frombuffer(d["buffers"][CTRL].numpy(), dtype=SLOT) for d in docs]
    ctrl = np.concatenate([c[:p] for c in ctrls] + [ctrls[0][p:]])
    buffers = dict(first["buffers"], **{CTRL: torch.from_numpy(ctrl.view(np.uint8).copy())})
    if ORDER in first["buffers"]:
        buffers[ORDER] = torch.cat([d["buffers"][ORDER] for d in docs])
    updates = (first.get("updates") if first.get("protocol") == "server" else
               int(ctrl["updates"][:p * len(docs)].sum()))
    return dict(first, buffers=buffers, workers=p * len(docs), updates=updates, merged=True)


def needs_reshard(doc: dict, plan: Plan) -> bool:
    """Whether the learners' slots must be rebuilt (another worker count over all nodes, or another
    node count)."""
    return bool(doc.get("merged")) or doc.get("workers") != plan.workers or saved_nodes(doc) != plan.nnodes
