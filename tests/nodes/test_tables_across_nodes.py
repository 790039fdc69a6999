"""Tables across two fake nodes (direct protocol): the nodes exchange the rows touched since the
last exchange, not whole tables, and end with one model; the other families are refused."""
from __future__ import annotations

import pytest
import torch
from loopback_nodes import finish, launch, load, no_segment_of, ok, same_model

ROWS, DIM = 1_000_000, 8
OPTS = ("-o", f"rows={ROWS}", "-o", f"dim={DIM}")


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("algo", ["hogwild", "apam"])
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


def test_families_without_a_row_exchange_are_refused():
    results = finish(launch("sync", "--steps", "100", *OPTS, problem="embedding-bag"))
    for rc, _, err in results:
        assert rc == 2 and "'table.weight' has sparse gradients" in err and "direct protocol" in err
