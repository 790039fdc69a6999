"""The algorithm registry: each name maps to a rule, a protocol and (for server protocols) a
K-of-P aggregation variant.

* ``hogwild`` — Niu et al. 2011: SGD, every worker applies its own update lock-free (``direct``);
  ``--protocol server`` gives master-worker async SGD.
* ``apam`` — Xu et al. arXiv 2002.09095: asynchronous AMSGrad; ``direct`` (Hogwild-style, default)
  or ``server`` (the reference's master-worker form: one applier, K-async with K = 1).
* ``sync`` — the synchronous baseline: average the P gradients computed on one version, apply
  once (K-sync with K = P); rule amsgrad (sync AMSGrad, default) or sgd.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    summary: str
    rule: str                       # default rule
    rules: tuple[str, ...]          # rules accepted
    protocol: str                   # default protocol
    protocols: tuple[str, ...]      # protocols accepted
    variant: str = "k-async"        # server protocols: the K-of-P variant (strategies.server)
    k: int | None = 1               # default K; None means K = P (all workers)
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
             "server", ("server",), variant="k-sync", k=None, asynchronous=False),
)}


def get_algorithm(name: str) -> AlgoSpec:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm {name!r}: choose one of "
                          f"{', '.join(sorted(ALGORITHMS))}") from None
