"""Tables (parameters with sparse gradients) trained by the engine: rows only, in the arena, with
the run's row rule; refused where a protocol has no sparse form; kept by checkpoints."""
from __future__ import annotations

import pathlib

import pytest
import torch
from helpers import engine_children, run_main

import shmopt
from shmopt import Config, Engine
from shmopt.advise import advise
from shmopt.engine import checkpoint
from shmopt.errors import ConfigError, ProblemError, ShmSpaceError, WorkerError
from shmopt.memory import shm
from shmopt.memory.tables import build_attached, is_table
from shmopt.problems import load_problem

HERE = pathlib.Path(__file__).parent
TABLES = str(HERE / "problems_for_tests" / "tables.py")
SMALL = {"rows": 5000, "dim": 8, "n": 32768}


def _initial_table(problem, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)                       # the engine builds its template under this seed
    return problem.model().table.weight.detach().clone()


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("algo", ["hogwild", "apam"])
def test_embedding_bag_trains_its_table_rows_only(algo):
    problem = load_problem("embedding-bag", **SMALL)
    start = _initial_table(problem)
    res = shmopt.train(problem, algo=algo, workers=2, steps=300)
    st = res.stats
    assert res.history[-1]["loss"] < 0.9 * res.history[0]["loss"]
    assert st["tables"] == [{"name": "table.weight", "rows": 5000, "dim": 8, "bytes": 5000 * 8 * 4,
                             "state_bytes": st["tables"][0]["state_bytes"]}]
    assert st["rows_touched"] > 300 and st["rows_per_s"] > 0
    trained = res.model.table.weight.detach()
    seen = torch.zeros(5000, dtype=torch.bool)
    seen[problem.train[0].reshape(-1)] = True
    assert torch.equal(trained[~seen], start[~seen])           # rows no batch touched: bit for bit
    assert not torch.equal(trained[seen], start[seen])


def test_row_rule_options_and_state_sizes():
    res = shmopt.train("embedding-bag", problem_options=SMALL, algo="apam", workers=1, steps=50,
                       table_rule="rowwise-amsgrad", betas=(0.0, 0.999), table_lr=0.05)
    t = res.stats["tables"][0]
    assert res.stats["table_rule"] == "rowwise_amsgrad" and res.stats["table_lr"] == 0.05
    assert t["state_bytes"] == 2 * 5000 * 4                     # v and v-hat, one float per row
    res = shmopt.train("embedding-bag", problem_options=SMALL, algo="apam", workers=1, steps=50)
    assert res.stats["table_rule"] == "lazy_amsgrad"
    assert res.stats["tables"][0]["state_bytes"] == 3 * 5000 * 8 * 4   # m, v, v-hat per element


def test_a_users_own_sparse_module_is_a_table():
    res = shmopt.train(TABLES, algo="hogwild", workers=2, steps=200)
    assert [t["name"] for t in res.stats["tables"]] == ["weight"]
    assert res.stats["rows_touched"] > 0 and res.history[-1]["loss"] < res.history[0]["loss"]


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("algo", ["sync", "k-async", pytest.param("k-batch-sync", marks=pytest.mark.slow), "lsgd",
                                  pytest.param("easgd", marks=pytest.mark.slow), "local-sgd"])
def test_every_protocol_trains_tables_by_rows(algo):
    """Server protocols carry rows in the mailbox; replicas keep a table per replica and couple it."""
    problem = load_problem("embedding-bag", **SMALL)
    start = _initial_table(problem)
    res = shmopt.train(problem, algo=algo, workers=2, steps=300)
    assert res.history[-1]["loss"] < 0.95 * res.history[0]["loss"]
    assert res.stats["rows_touched"] > 0
    seen = torch.zeros(5000, dtype=torch.bool)
    seen[problem.train[0].reshape(-1)] = True
    trained = res.model.table.weight.detach()
    assert torch.equal(trained[~seen], start[~seen]) and not torch.equal(trained[seen], start[seen])


def test_independent_replica_starts_are_refused_with_tables():
    with pytest.raises(ConfigError, match=r"parameter 'table.weight' has sparse gradients .*replica-init same"):
        Engine(load_problem("embedding-bag", **SMALL), Config(algo="lsgd", workers=2, steps=10,
                                                               replica_init="independent"))
    assert not engine_children()


def test_cli_refusal_is_one_line_and_exit_2(capsys):
    code, out, err = run_main(["run", "embedding-bag", "-o", "rows=1000", "--algo", "hogwild",
                               "--momentum", "0.9"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "'table.weight'" in err and "momentum" in err and not engine_children()


def test_an_index_past_the_table_names_the_table():
    with pytest.raises(WorkerError, match=r"a row index out of range in a table of the model \('weight' \(500 rows\)"):
        shmopt.train(TABLES, problem_options={"bad_from": 64}, algo="hogwild", workers=1, steps=500)


def test_checkpoints_hold_the_tables_and_their_state(tmp_path):
    path = tmp_path / "m.ckpt"
    res = shmopt.train("embedding-bag", problem_options=SMALL, algo="apam", workers=2, steps=200,
                       checkpoint=str(path))
    doc = checkpoint.load(str(path))
    x = doc["buffers"]["x"].view(torch.float32)                 # the dense parameters, then the table
    assert torch.equal(x[-5000 * 8:].view(5000, 8), res.model.table.weight.detach())
    assert {"table0_m", "table0_v", "table0_vmax"} <= set(doc["buffers"])
    again = shmopt.train("embedding-bag", problem_options=SMALL, algo="apam", workers=2, steps=220,
                         resume=str(path))
    assert again.history[0]["loss"] == pytest.approx(res.history[-1]["loss"], rel=1e-6)


def test_a_worker_never_allocates_a_table():
    """A 2-TB table: built privately it could not exist; built on meta and attached it costs nothing."""
    rows, dim = 2 ** 36, 8
    arena_like = torch.zeros(dim).as_strided((rows, dim), (0, 1))   # stands in for the arena's buffer

    def factory():
        return torch.nn.Sequential(torch.nn.EmbeddingBag(rows, dim, sparse=True), torch.nn.Linear(dim, 1),
                                   torch.nn.BatchNorm1d(1))
    model = build_attached(factory, {"0.weight": arena_like}, {"2.num_batches_tracked": torch.tensor(7)})
    w = model[0].weight
    assert is_table(w) and w.data_ptr() == arena_like.data_ptr() and w.shape == (rows, dim)
    assert not any(p.is_meta for p in model.parameters()) and int(model[2].num_batches_tracked) == 7


def test_a_table_larger_than_memory_is_refused_before_any_build():
    """32 TiB of table: refused from a build on meta, before the first real build."""
    with pytest.raises(ProblemError, match=r"the model's parameters need 32.0 TiB but this machine has"):
        load_problem("embedding-bag", rows=2**31, dim=4096, n=64)


def test_a_table_too_large_for_dev_shm_is_refused_before_the_engine_builds_it(monkeypatch):
    problem = load_problem("embedding-bag", rows=10**6, dim=32, n=64)      # 122 MiB of table
    monkeypatch.setattr(shm, "shm_free_bytes", lambda: 64 * 2**20)          # a Docker-sized /dev/shm
    with pytest.raises(ShmSpaceError, match=r"not enough shared memory: the arena needs 122.1 MiB"):
        Engine(problem, Config(algo="hogwild", workers=2, steps=10))
    assert not engine_children()


def test_advise_knows_a_model_with_tables():
    a = advise("embedding-bag", 2, options=SMALL, calibration_s=0.2, calibration_batches=10, iterations=1000)
    assert a["tables"] == [{"name": "table.weight", "rows": 5000, "dim": 8, "lookups_per_batch": 64 * 8,
                            "bytes": 5000 * 8 * 4}]
    assert any("2 copies" in n and "sparse gradients" in n for n in a["notes"])
    assert advise("logreg", 2, calibration_s=0.2, calibration_batches=10, iterations=1000)["tables"] == []


class _Masked(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(10, 2, sparse=True)
        self.mask = torch.arange(2.0)                       # a plain attribute: no values on meta


def test_a_model_with_a_plain_tensor_attribute_is_built_for_real():
    table = torch.zeros(10, 2)
    model = build_attached(_Masked, {"table.weight": table}, {})
    assert not model.mask.is_meta and torch.equal(model.mask, torch.arange(2.0))
    assert model.table.weight.data_ptr() == table.data_ptr()
