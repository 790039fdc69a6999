"""Across nodes: everything the engine does between machines, in one package.

* :mod:`.link` — :class:`~.link.NodeLink`, the node's one member of the torch.distributed (gloo)
  group and the one transport: rendezvous, polled collectives, point-to-point messages, heartbeats
  and the naming of a lost node;
* :mod:`.exchange`, :mod:`.delta`, :mod:`.leader`, :mod:`.exchanges` — the exchanges of the direct
  and replica protocols (the contract, each exchange, and the registry by name);
* :mod:`.link_loop` — the node link's process loop that runs them;
* :mod:`.reducing_io`, :mod:`.global_io`, :mod:`.wire`, :mod:`.relay` — server protocols: the
  applier IO of ``sync`` (an all-reduce per update) and of the global applier on node 0, their
  messages, and the relay on every other node;
* :mod:`.finish` — how a node's supervisor ends a job with the others.

The pure decisions every node takes the same way are in ``shmopt.strategies.nodes``; the node
options (which node, how to meet, how often) in ``shmopt.node_plan``.
"""
