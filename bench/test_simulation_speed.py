"""Speed of the runtime-theory simulation (``shmopt theory --simulate``, ``shmopt advise``):
200k updates at P = 16, the worst cases (K-async with K near P, K-batch-sync at K = P).

    pytest bench/test_simulation_speed.py --benchmark-json=bench/results/simulation.json
"""
from __future__ import annotations

import pytest

from shmopt.strategies.theory import simulate


@pytest.mark.parametrize("variant,k,delay", [("k-async", 15, "shifted-exp:0.01:0.02"),
                                             ("k-batch-sync", 16, "exp:0.02")])
def test_simulation_of_200k_updates(benchmark, variant, k, delay):
    mean, se = benchmark.pedantic(simulate, args=(variant, 16, k, delay), kwargs={"iterations": 200_000},
                                  rounds=3, iterations=1)
    benchmark.extra_info.update(kind="simulation", variant=variant, workers=16, k=k, delay=delay,
                                updates=200_000, mean_s=mean)
    assert mean > 0 and se >= 0
