"""The algorithm registry: each name maps to a rule, a protocol and (for server protocols) a
K-of-P aggregation variant.

* ``hogwild`` — Niu et al. 2011: SGD, every worker applies its own update lock-free (``direct``);
  ``--protocol server`` gives master-worker async SGD.
* ``apam`` — Xu et al. arXiv 2002.09095: asynchronous AMSGrad; ``direct`` (Hogwild-style, default)
  or ``server`` (the reference's master-worker form: one applier, K-async with K = 1).
* ``sync`` — the synchronous baseline: average the P gradients computed on one version, apply
  once (K-sync with K = P); rule amsgrad (sync AMSGrad, default) or sgd.
* ``k-sync``, ``k-batch-sync``, ``k-async``, ``k-batch-async`` — Dutta et al., "Slow and Stale
  Gradients Can Win the Race", AISTATS 2018: K-of-P aggregation at one server (strategies.server);
  default K = max(1, P // 2), rule sgd (amsgrad/adam allowed).
* ``lsgd``, ``easgd``, ``local-sgd`` — the replica protocol: every worker trains its own replica in
  the arena; each method is a class of :mod:`shmopt.strategies.replicas`, registered there, which
  adds its row here.

The words that classify a run, each defined once:

* **algorithm** — the name a user picks (``--algo``), a row of :data:`ALGORITHMS`;
* **protocol** — who writes the shared parameters: ``direct`` (every learner, lock-free),
  ``server`` (one applier) or ``replicas`` (each learner its own replica);
* **variant** — the protocol's form: the K-of-P variant of ``server`` (strategies.server), the
  replica method of ``replicas``, ``direct`` for ``direct``;
* **family** — what crosses the network between nodes (:func:`family`): ``direct``, ``sync``,
  ``server`` or the replica method;
* **worker mode** — what a learner of a server protocol does right after pushing a gradient
  (strategies.server.WorkerMode: wait, go on with the same parameters, or pull);
* **role** — what an engine process is: a learner, or rank P's applier, relay or node link
  (engine.roles).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .replicas import REPLICA_METHODS


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    summary: str
    rule: str                       # default rule
    rules: tuple[str, ...]          # rules accepted
    protocol: str                   # default protocol
    protocols: tuple[str, ...]      # protocols accepted
    variant: str = "k-async"        # the protocol's form: K-of-P variant (server), replica method
    k: int | str = 1                # default K: a number, "P" (all workers) or "P/2" (half, at least 1)
    asynchronous: bool = True       # gradients may be stale


ALGORITHMS: dict[str, AlgoSpec] = {a.name: a for a in (
    AlgoSpec("hogwild", "Hogwild SGD: each worker applies its own SGD update to the shared "
             "parameters without locks (Niu et al. 2011)", "sgd", ("sgd",), "direct",
             ("direct", "server")),
    AlgoSpec("apam", "asynchronous parallel AMSGrad: shared m, v, v-hat updated lock-free by every "
             "worker, or by one applier with --protocol server (Xu et al. 2020)", "amsgrad",
             ("amsgrad", "adam"), "direct", ("direct", "server")),
    AlgoSpec("sync", "synchronous baseline: average the P gradients computed on the same version, "
             "apply once (sync AMSGrad, or --rule sgd)", "amsgrad", ("amsgrad", "adam", "sgd"),
             "server", ("server",), variant="k-sync", k="P", asynchronous=False),
    AlgoSpec("k-sync", "K-sync SGD: update with the first K distinct learners' gradients, cancel the "
             "rest, everyone restarts on the new parameters (Dutta et al. 2018)", "sgd",
             ("sgd", "amsgrad", "adam"), "server", ("server",), variant="k-sync", k="P/2",
             asynchronous=False),
    AlgoSpec("k-batch-sync", "K-batch-sync SGD: update with the first K mini-batches from anyone "
             "(early finishers start another batch on the same parameters), cancel the rest",
             "sgd", ("sgd", "amsgrad", "adam"), "server", ("server",), variant="k-batch-sync",
             k="P/2", asynchronous=False),
    AlgoSpec("k-async", "K-async SGD: update when K distinct learners have pushed (stale gradients "
             "count); only the pushers get the new parameters, the others keep computing", "sgd",
             ("sgd", "amsgrad", "adam"), "server", ("server",), variant="k-async", k="P/2"),
    AlgoSpec("k-batch-async", "K-batch-async SGD: update every K mini-batches from anyone; every "
             "learner pulls the current parameters after each push and never idles", "sgd",
             ("sgd", "amsgrad", "adam"), "server", ("server",), variant="k-batch-async", k="P/2"),
)}
ALGORITHMS.update({m.name: AlgoSpec(m.name, m.summary, m.rule, m.rules, "replicas", ("replicas",),
                                     variant=m.name) for m in REPLICA_METHODS.values()})


def default_k(spec: AlgoSpec, workers: int) -> int:
    if spec.k == "P":
        return workers
    if spec.k == "P/2":
        return max(1, workers // 2)
    return int(spec.k)


def get_algorithm(name: str) -> AlgoSpec:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm {name!r}: choose one of "
                          f"{', '.join(sorted(ALGORITHMS))}") from None


def family(algo: str, protocol: str, variant: str) -> str:
    """What crosses the network between nodes: ``sync`` (an all-reduce of gradients), ``server``
    (gradients to one global applier), ``direct`` (the model's delta), or the replica method."""
    if protocol == "server":
        return "sync" if algo == "sync" else "server"
    return variant
