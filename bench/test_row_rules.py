"""Row update rules (issue #23, sparse embeddings): rows/s against torch's sparse optimizers, and
the state bytes per parameter of each rule.

A table of 10^6 rows x 64 float32, batches of 4096 row indices drawn from a power law (exponent
1.05 over a fixed random permutation of the rows: about 2,200 distinct rows per batch, hot rows
repeated), gradients as ``nn.Embedding(sparse=True)`` gives them (uncoalesced COO, one value
row per index).  Sides, interleaved in every round (the order rotates from round to round):

* ``torch``: the private torch optimizer, ``p.grad = grad; opt.step()`` (torch.optim.SGD,
  Adagrad, SparseAdam: the only sparse kernels torch has; they coalesce the gradient themselves);
* ``ours``: the shmopt row rule on a table and state living in shared memory (an arena),
  ``rule.update_sparse(table, grad, state, step)``: ``from_sparse(grad)`` then ``rule.update``
  on the unique rows, except that SGD (linear) adds the rows as they come, without coalescing;
* ``private``: the same rule on private tensors: ours / private is what living in shared memory
  costs.

Each block times enough steps to last about 0.1 s; rows/s counts gradient rows (the 4096 indices
of a batch, duplicates included).  Figures are medians over rounds of the per-step time and of the
per-round ratios.  Row-wise Adagrad, row-wise AMSGrad and lazy AMSGrad have no torch counterpart:
their ``torch`` side is the closest torch rule (Adagrad, SparseAdam), a different update shown
for scale only.  torch runs with the thread count of one shmopt worker (``default_threads(1)``).

    python -m pytest bench/test_row_rules.py --benchmark-json=bench/results/row_rules.json
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import pytest
import torch

from shmopt.memory import Arena, Layout
from shmopt.plan import default_threads
from shmopt.rules import (
    LazyAdam,
    RowAdagrad,
    RowRule,
    RowSGD,
    RowwiseAdagrad,
    RowwiseAMSGrad,
)

pytestmark = pytest.mark.usefixtures("no_leaks")

ROWS, DIM, BATCH, ALPHA = 1_000_000, 64, 4096, 1.05
POOL = 16                      # distinct gradients, used in turn
BLOCK_S = 0.1
GOAL = 0.8                     # issue #23: ours >= 0.8x torch in rows/s

# case id -> (our rule, torch optimizer class, its options, same update as ours)
CASES: dict[str, tuple[RowRule, type[torch.optim.Optimizer], dict, bool]] = {
    "sgd": (RowSGD(lr=0.01), torch.optim.SGD, {"lr": 0.01}, True),
    "adagrad": (RowAdagrad(lr=0.01), torch.optim.Adagrad, {"lr": 0.01}, True),
    "lazy_adam": (LazyAdam(lr=1e-3), torch.optim.SparseAdam, {"lr": 1e-3}, True),
    "rowwise_adagrad": (RowwiseAdagrad(lr=0.01), torch.optim.Adagrad, {"lr": 0.01}, False),
    "lazy_amsgrad": (LazyAdam(lr=1e-3, amsgrad=True), torch.optim.SparseAdam, {"lr": 1e-3}, False),
    "rowwise_amsgrad": (RowwiseAMSGrad(lr=1e-3), torch.optim.SparseAdam, {"lr": 1e-3}, False),
}

# state-size table: every rule and variant (the row-wise AMSGrad without m when beta1 = 0)
STATE_RULES: dict[str, RowRule] = {
    "row_sgd": RowSGD(), "row_adagrad": RowAdagrad(), "rowwise_adagrad": RowwiseAdagrad(),
    "lazy_adam": LazyAdam(), "lazy_amsgrad": LazyAdam(amsgrad=True),
    "rowwise_amsgrad": RowwiseAMSGrad(), "rowwise_amsgrad_b1_0": RowwiseAMSGrad(betas=(0.0, 0.999)),
}


def power_law_rows(gen: torch.Generator, n: int, perm: torch.Tensor) -> torch.Tensor:
    """``n`` row indices, rank ``r`` drawn with density ~ ``r^-ALPHA`` on ``[1, ROWS]`` (inverse
    CDF of the continuous law, floored), mapped through ``perm`` so hot rows are scattered."""
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    a = 1.0 - ALPHA
    rank = (1.0 + u * (ROWS ** a - 1.0)).pow(1.0 / a).floor_().long().sub_(1).clamp_(0, ROWS - 1)
    return perm[rank]


def embedding_grads(weight: torch.nn.Parameter, seed: int = 0) -> list[torch.Tensor]:
    """POOL sparse gradients of ``weight``, each from a real ``F.embedding(sparse=True)`` backward."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(ROWS, generator=gen)
    out = []
    for _ in range(POOL):
        idx = power_law_rows(gen, BATCH, perm)
        torch.nn.functional.embedding(idx, weight, sparse=True).backward(
            torch.randn(BATCH, DIM, generator=gen))
        out.append(weight.grad)
        weight.grad = None
    assert out[0].is_sparse and not out[0].is_coalesced()       # as nn.Embedding(sparse=True) gives
    return out


class SharedRows:
    """A table and a rule's state in one shared-memory arena; :meth:`close` drops every view
    first, so the segment is unmapped as well as unlinked."""

    def __init__(self, rule: RowRule, w0: torch.Tensor) -> None:
        specs = rule.state_specs(*w0.shape)
        self.arena = Arena.create(Layout.build(
            [("table", tuple(w0.shape), "float32")] + [(k, s, "float32") for k, s in specs.items()]))
        self.table = self.arena.tensor("table")
        self.table.copy_(w0)
        self.state = {k: self.arena.tensor(k) for k in specs}
        rule.init(self.state)

    def close(self) -> None:
        self.table = torch.empty(0)
        self.state = {}
        self.arena.close()


def _steps_for(fn: Callable[[], None]) -> int:
    """Steps per timed block: about BLOCK_S seconds, at least 5 (after 3 warm-up steps)."""
    for _ in range(3):
        fn()
    return max(5, int(BLOCK_S / max(_time_block(fn, 5), 1e-6)))


def _time_block(fn: Callable[[], None], steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def _spread(values: list[float]) -> tuple[float, float]:
    """The interquartile range (25th, 75th percentile) of ``values``."""
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


@pytest.mark.parametrize("case", list(CASES))
def test_row_rule_vs_torch(benchmark, quick, case):
    rule, opt_cls, opt_kw, same = CASES[case]
    rounds = 7 if quick else 21
    threads = default_threads(1)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    w0 = torch.randn(ROWS, DIM, generator=torch.Generator().manual_seed(1))
    p = torch.nn.Parameter(w0.clone())
    grads = embedding_grads(p)
    distinct = statistics.mean(g._indices().unique().numel() for g in grads)
    opt = opt_cls([p], **opt_kw)
    shared = SharedRows(rule, w0)
    private_table = w0.clone()
    private_state = {k: torch.empty(s) for k, s in rule.state_specs(ROWS, DIM).items()}
    rule.init(private_state)
    del w0
    count = {"torch": 0, "ours": 0, "private": 0}

    def torch_step() -> None:
        p.grad = grads[count["torch"] % POOL]
        count["torch"] += 1
        opt.step()

    def ours_step() -> None:
        grad = grads[count["ours"] % POOL]
        count["ours"] += 1
        rule.update_sparse(shared.table, grad, shared.state, step=count["ours"])

    def private_step() -> None:
        grad = grads[count["private"] % POOL]
        count["private"] += 1
        rule.update_sparse(private_table, grad, private_state, step=count["private"])

    fns = {"torch": torch_step, "ours": ours_step, "private": private_step}
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    try:
        steps = {k: _steps_for(fn) for k, fn in fns.items()}      # also the warm-up (state, pages)
        steps["private"] = steps["ours"]          # the same steps on both tables: the same bits

        def one_round() -> None:
            for k in order:
                times[k].append(_time_block(fns[k], steps[k]))
            order.append(order.pop(0))            # rotate: no side always goes first

        benchmark.pedantic(one_round, rounds=rounds, iterations=1)
        assert torch.isfinite(shared.table[:1000]).all()
        assert torch.equal(shared.table, private_table)     # same rule, same steps: same bits
    finally:
        torch.set_num_threads(old_threads)
        shared.close()

    ratios = [t / o for t, o in zip(times["torch"], times["ours"])]     # >1: ours faster
    shm_cost = [o / q for o, q in zip(times["ours"], times["private"])]
    med = {k: statistics.median(v) for k, v in times.items()}
    lo, hi = _spread(ratios)
    benchmark.extra_info.update(
        kind="row_rules", case=case, rule=rule.name, rule_repr=repr(rule),
        torch_optimizer=opt_cls.__name__, same_update=same, rows=ROWS, dim=DIM, batch=BATCH,
        alpha=ALPHA, distinct_rows_mean=distinct, threads=threads, rounds=rounds, steps=steps,
        torch_ms=med["torch"] * 1e3, ours_ms=med["ours"] * 1e3, private_ms=med["private"] * 1e3,
        rows_per_s_torch=BATCH / med["torch"], rows_per_s_ours=BATCH / med["ours"],
        rows_per_s_private=BATCH / med["private"],
        ratio=statistics.median(ratios), ratio_q1=lo, ratio_q3=hi, ratios=ratios,
        shared_vs_private=statistics.median(shm_cost), goal=GOAL,
        goal_met=(statistics.median(ratios) >= GOAL) if same else None)
    assert all(v > 0 for v in med.values())


def state_bytes(rule: RowRule, rows: int = ROWS, dim: int = DIM) -> dict[str, float]:
    """Bytes of a rule's state for a ``(rows, dim)`` float32 table, split row-wise / element-wise."""
    row_b = elem_b = 0
    for shape in rule.state_specs(rows, dim).values():
        nbytes = 4 * math.prod(shape)
        if len(shape) == 1:
            row_b += nbytes
        else:
            elem_b += nbytes
    params = rows * dim
    return {"row_wise_bytes": row_b, "element_wise_bytes": elem_b, "state_bytes": row_b + elem_b,
            "bytes_per_param": (row_b + elem_b) / params, "row_wise_per_param": row_b / params,
            "element_wise_per_param": elem_b / params}


def test_row_rule_state_bytes(benchmark):
    out = {name: {"buffers": {k: list(s) for k, s in rule.state_specs(ROWS, DIM).items()},
                  **state_bytes(rule)} for name, rule in STATE_RULES.items()}
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)    # a table, not a timing
    benchmark.extra_info.update(kind="row_state", rows=ROWS, dim=DIM, rules=out)
    assert out["row_sgd"]["state_bytes"] == 0
    assert out["row_adagrad"]["bytes_per_param"] == 4.0
    assert out["rowwise_adagrad"]["bytes_per_param"] == 4.0 / DIM
    assert out["lazy_amsgrad"]["bytes_per_param"] == 12.0
    assert out["rowwise_amsgrad_b1_0"]["element_wise_bytes"] == 0
