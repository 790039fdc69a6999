"""Tables across two fake nodes (direct protocol): the nodes exchange the rows touched since the
last exchange, not whole tables, and end with one model; the other families are refused."""
from __future__ import annotations

import pytest
import torch
from loopback_nodes import finish, launch, load, no_segment_of, ok, same_model

ROWS, DIM = 1_000_000, 8
OPTS = ("-o", f"rows={ROWS}", "-o", f"dim={DIM}")


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("algo", ["apam"])          # hogwild's exchange is the same code
def test_two_nodes_exchange_touched_rows_and_end_with_one_model(tmp_path, algo):
    save = str(tmp_path / "m.pt")
    procs = launch(algo, "--steps", "1200", "--exchange-every", "20", "--save", save, *OPTS,
                   problem="embedding-bag")
    s0, s1 = ok(finish(procs))
    assert s0["exchanges"] == s1["exchanges"] >= 2
    assert s0["final_loss"] == s1["final_loss"] < 0.6       # ln 2 at the start
    assert same_model(str(tmp_path / "m.node0.pt"), str(tmp_path / "m.node1.pt"))
    # rows, not tables: a whole-table exchange would send ROWS x DIM x 4 bytes each time (node 1
    # sends nothing in node 0's start broadcast: all it sent are exchanges)
    table_bytes = ROWS * DIM * 4
    assert 0 < s1["bytes_sent"] < 0.25 * s1["exchanges"] * table_bytes
    trained = load(str(tmp_path / "m.node0.pt"))["table.weight"]
    assert trained.shape == (ROWS, DIM) and torch.isfinite(trained).all()
    no_segment_of(procs)


@pytest.mark.timeout_s(240)
def test_sync_nodes_all_gather_the_rows_and_end_with_one_model(tmp_path):
    save = str(tmp_path / "s.pt")
    procs = launch("sync", "--steps", "300", "--save", save, *OPTS, problem="embedding-bag")
    s0, s1 = ok(finish(procs))
    assert s0["updates"] == s1["updates"] == 300 and s0["final_loss"] == s1["final_loss"] < 0.69
    assert same_model(str(tmp_path / "s.node0.pt"), str(tmp_path / "s.node1.pt"))
    assert s1["bytes_sent"] < 0.25 * 300 * ROWS * DIM * 4          # rows, never whole tables
    no_segment_of(procs)


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("algo", ["k-async"])        # every server variant shares the global applier
def test_the_global_applier_takes_rows_and_answers_with_rows(tmp_path, algo):
    """Gradients go up as rows; answers come down as the rows written since, never whole tables."""
    save = str(tmp_path / "g.pt")
    extra = ("--protocol", "server") if algo == "apam-server" else ()
    procs = launch(algo.replace("-server", ""), "--steps", "600", "--save", save, *extra, *OPTS,
                   problem="embedding-bag")
    s0, s1 = ok(finish(procs))
    assert s0["updates"] == s1["updates"] == 600 and s0["final_loss"] < 0.69
    assert same_model(str(tmp_path / "g.node0.pt"), str(tmp_path / "g.node1.pt"))
    up = s1["bytes_sent"] / max(1, s1["exchanges"])                  # one relay message
    assert up < 0.01 * ROWS * DIM * 4
    assert s0["bytes_sent"] < 0.25 * s0["messages"] * ROWS * DIM * 4  # answers: rows since
    no_segment_of(procs)


@pytest.mark.slow
@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("algo", ["lsgd"])           # its leader exchange moves a whole replica
def test_replica_methods_exchange_whole_tables_across_nodes(tmp_path, algo):
    """Documented: a replica method's exchange moves whole replicas or centres, tables included."""
    save = str(tmp_path / "r.pt")
    s0, s1 = ok(finish(launch(algo, "--steps", "600", "--tau-global", "20", "--save", save,
                              "-o", "rows=100000", "-o", f"dim={DIM}", problem="embedding-bag")))
    assert s0["final_loss"] == s1["final_loss"] < 0.69
    assert same_model(str(tmp_path / "r.node0.pt"), str(tmp_path / "r.node1.pt"))
