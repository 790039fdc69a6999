"""``wordnet-kg``: the WordNet reader and split (on wndb files written here), the KG models, the
loss and the filtered ranking (against a brute-force count on a tiny graph)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from wndb import chain_graph, write_wndb

from shmopt.errors import DataError, ProblemError
from shmopt.problems import load_problem
from shmopt.problems.kg_models import KG_MODELS, KGModel, kg_loss
from shmopt.problems.kg_rank import FilteredRanking, filtered_ranks
from shmopt.problems.wordnet import held_out_split, read_wordnet

SMALL = [
    (100, "n", ["dog", "domestic_dog"], [("@", 200, "n", "0000"), ("+", 300, "v", "0101")]),
    (200, "n", ["canine"], [("~", 100, "n", "0000"), ("~", 100, "n", "0000")]),   # given twice
    (300, "v", ["bark"], [("+", 100, "n", "0101"), ("$", 300, "v", "0000")]),
    (400, "a", ["loud"], [("&", 500, "a", "0000"), ("!", 600, "a", "0101")]),
    (500, "s", ["noisy"], [("&", 400, "a", "0000")]),
    (600, "a", ["quiet"], []),
    (700, "r", ["loudly"], [("\\", 400, "a", "0101")]),
]


def test_reader_keeps_semantic_pointers_once_and_counts_the_lexical_ones(tmp_path):
    g = read_wordnet(write_wndb(tmp_path, SMALL))
    assert g.synsets == ["n.00000100", "n.00000200", "v.00000300", "a.00000400", "a.00000500",
                         "a.00000600", "r.00000700"]              # the satellite is an adjective
    assert g.words[:3] == ["dog", "canine", "bark"]
    assert g.relations == ["$", "&", "@", "~"]
    named = {(g.synsets[h], g.relations[r], g.synsets[t]) for h, r, t in g.triples.tolist()}
    assert named == {("n.00000100", "@", "n.00000200"), ("n.00000200", "~", "n.00000100"),
                     ("v.00000300", "$", "v.00000300"), ("a.00000400", "&", "a.00000500"),
                     ("a.00000500", "&", "a.00000400")}
    assert len(g.triples) == 5 and g.duplicates == 1 and g.lexical == 4


def test_reader_refuses_a_bad_line_an_unknown_target_and_a_missing_file(tmp_path):
    folder = write_wndb(tmp_path / "a", SMALL)
    (folder / "data.adv").write_text("00000700 02 r 01 loudly 0 001 \\ 00000400 | gloss\n")
    with pytest.raises(DataError, match=r"data.adv:1: not a WordNet data line"):
        read_wordnet(folder)
    folder = write_wndb(tmp_path / "b", SMALL[:1] + SMALL[2:])
    with pytest.raises(DataError, match="'@' pointer of synset n.00000100 names synset n.00000200, which no"):
        read_wordnet(folder)
    (folder / "data.verb").unlink()
    with pytest.raises(DataError, match="cannot read .*data.verb"):
        read_wordnet(folder)


def test_split_is_seeded_and_keeps_every_test_entity_and_relation_in_training(tmp_path):
    g = read_wordnet(write_wndb(tmp_path, chain_graph(40)))
    train, test = held_out_split(g.triples, 12, torch.Generator().manual_seed(3))
    again = held_out_split(g.triples, 12, torch.Generator().manual_seed(3))[1]
    other = held_out_split(g.triples, 12, torch.Generator().manual_seed(4))[1]
    assert np.array_equal(test, again) and not np.array_equal(test, other)
    assert len(test) == 12 and sorted(np.concatenate([train, test]).tolist()) == list(range(len(g.triples)))
    seen = set(g.triples[train][:, [0, 2]].ravel().tolist())
    assert set(g.triples[test][:, [0, 2]].ravel().tolist()) <= seen
    assert set(g.triples[test][:, 1].tolist()) <= set(g.triples[train][:, 1].tolist())
    with pytest.raises(DataError, match="can be held out"):
        held_out_split(g.triples, len(g.triples), torch.Generator().manual_seed(0))


def test_dropping_pairs_leaves_no_held_out_pair_in_training_either_way(tmp_path):
    g = read_wordnet(write_wndb(tmp_path, chain_graph(40)))
    kept = held_out_split(g.triples, 8, torch.Generator().manual_seed(1))[0]
    train, test = held_out_split(g.triples, 8, torch.Generator().manual_seed(1), drop_pairs=True)
    pairs = {frozenset(p) for p in g.triples[test][:, [0, 2]].tolist()}
    assert len(test) == 8 and not {frozenset(p) for p in g.triples[train][:, [0, 2]].tolist()} & pairs
    dropped = set(range(len(g.triples))) - set(train.tolist()) - set(test.tolist())
    assert len(dropped) == 8 and len(kept) == len(train) + 8      # chain_graph stores every pair both ways
    assert {frozenset(g.triples[i][[0, 2]].tolist()) for i in dropped} == pairs
    assert set(g.triples[test][:, [0, 2]].ravel().tolist()) <= set(g.triples[train][:, [0, 2]].ravel().tolist())


# ------------------------------------------------------------------ models, loss, ranking
def _model(kind: str, entities: int = 9, relations: int = 3, dim: int = 4) -> KGModel:
    torch.manual_seed(0)
    m = KGModel(kind, entities, relations, dim, init=0.5)
    with torch.no_grad():
        m.relation.weight.normal_()
    return m.eval()


def _reference_score(m: KGModel, h: int, r: int, t: int) -> float:
    """The score by its textbook formula (complex numbers for ComplEx)."""
    eh, wr, et = (x.detach() for x in (m.entity.weight[h], m.relation.weight[r], m.entity.weight[t]))
    if m.kind == "distmult":
        return float((eh * wr * et).sum())
    if m.kind == "transe":
        return float(4.0 - (eh + wr - et).norm())
    c = [torch.complex(*x.chunk(2)) for x in (eh, wr, et)]
    return float((c[0] * c[1] * c[2].conj()).sum().real)


@pytest.mark.parametrize("kind", KG_MODELS)
def test_scores_queries_and_all_entity_scores_agree_with_the_formula(kind):
    m = _model(kind)
    triples = torch.tensor([[0, 1, 2], [3, 0, 3], [8, 2, 5]])
    with torch.no_grad():
        got = m(triples)
        eh, wr, et = m.entity(triples[:, 0]), m.relation(triples[:, 1]), m.entity(triples[:, 2])
        tails = m.against_all(m.tail_query(eh, wr))
        heads = m.against_all(m.head_query(wr, et))
    for i, (h, r, t) in enumerate(triples.tolist()):
        assert float(got[i]) == pytest.approx(_reference_score(m, h, r, t), abs=1e-5)
        for e in range(9):
            assert float(tails[i, e]) == pytest.approx(_reference_score(m, h, r, e), abs=1e-4)
            assert float(heads[i, e]) == pytest.approx(_reference_score(m, e, r, t), abs=1e-4)


def _brute_force_ranks(m: KGModel, test: list, known: set) -> list[float]:
    """Tails then heads: 1 + #better + #ties / 2 over the candidates not known to be true."""
    out = {"tail": [], "head": []}
    for side in out:
        for h, r, t in test:
            true = _reference_score(m, h, r, t)
            above = ties = 0
            for e in range(m.entity.num_embeddings):
                cand = (h, r, e) if side == "tail" else (e, r, t)
                if cand == (h, r, t) or cand in known:
                    continue
                s = _reference_score(m, *cand)
                above += s > true + 1e-6
                ties += abs(s - true) <= 1e-6
            out[side].append(1 + above + ties / 2)
    return out["tail"] + out["head"]


@pytest.mark.parametrize("kind", KG_MODELS)
def test_filtered_ranks_match_a_brute_force_count(kind):
    m = _model(kind)
    known = [(0, 1, 2), (0, 1, 5), (0, 1, 7), (4, 1, 2), (3, 0, 3), (6, 2, 1), (8, 2, 1), (8, 2, 5)]
    test = [(0, 1, 2), (8, 2, 1), (3, 0, 3)]
    ranking = FilteredRanking(torch.tensor(known), 3, chunk=2)
    got = filtered_ranks(m, torch.tensor(test), ranking).tolist()
    assert got == pytest.approx(_brute_force_ranks(m, test, set(known)))
    metrics = ranking(m, (torch.tensor(test),))
    assert metrics["mrr"] == pytest.approx(float(np.mean([1 / r for r in got])))
    assert metrics["hits@10"] == 1.0                           # 9 entities: every rank <= 9


def test_ties_count_half_and_filtered_answers_do_not_count():
    m = _model("distmult", entities=5, relations=1)
    with torch.no_grad():
        m.entity.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [2, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0],
                                            [0, 0, 0, 0]]))
        m.relation.weight.fill_(1.0)
    # tail ranks of (0, 0, 1): entity 2 ties with 1, entity 3 scores higher
    plain = FilteredRanking(torch.tensor([[0, 0, 1]]), 1)
    assert filtered_ranks(m, torch.tensor([[0, 0, 1]]), plain)[0] == 2.5
    filtered = FilteredRanking(torch.tensor([[0, 0, 1], [0, 0, 3]]), 1)
    assert filtered_ranks(m, torch.tensor([[0, 0, 1]]), filtered)[0] == 1.5


@pytest.mark.parametrize("kind", KG_MODELS)
def test_loss_gives_the_entity_table_a_sparse_gradient_and_is_fixed_in_eval_mode(kind):
    m = _model(kind).train()
    batch = (torch.tensor([[0, 1, 2], [3, 0, 4], [5, 2, 6]]),)
    loss = kg_loss(m, batch, negatives=4, l2=0.01)
    loss.backward()
    assert torch.isfinite(loss) and m.entity.weight.grad.is_sparse and not m.relation.weight.grad.is_sparse
    m.eval()
    with torch.no_grad():
        assert float(kg_loss(m, batch, 4)) == float(kg_loss(m, batch, 4))
        assert float(kg_loss(m, batch, 4, l2=1.0)) > float(kg_loss(m, batch, 4))


def test_a_trained_row_ranks_better(tmp_path):
    """150 SGD steps of DistMult on a chain graph lift the MRR of the training triples."""
    p = load_problem("wordnet-kg", path=str(write_wndb(tmp_path, chain_graph(30))), dim=8, n_test=5,
                     n_eval=5, batch_size=16, negatives=4)
    torch.manual_seed(0)
    m = p.model()
    before = p.metrics(m.eval(), p.train)["mrr"]
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m.train()
    for _ in range(150):
        idx = torch.randint(0, p.num_train, (16,))
        opt.zero_grad()
        p.loss(m, (p.train[0][idx],)).backward()
        opt.step()
    assert p.metrics(m.eval(), p.train)["mrr"] > before + 0.15


# ------------------------------------------------------------------ the problem's options
def test_problem_options_and_missing_data_are_one_line_problem_errors(tmp_path):
    folder = write_wndb(tmp_path / "wn", chain_graph(30))
    p = load_problem("wordnet-kg", path=str(folder), n_test=6, n_eval=4, batch_size=8, model="complex")
    assert p.num_train == len(read_wordnet(folder).triples) - 6 and len(p.eval[0]) == 4
    assert p.model().entity.weight.shape == (30, 128)
    with pytest.raises(ProblemError, match=r"invalid model='rotate': choose one of distmult, complex, transe"):
        load_problem("wordnet-kg", path=str(folder), model="rotate")
    with pytest.raises(ProblemError, match=r"invalid n_eval=9: must be an integer in \[1, 6\]"):
        load_problem("wordnet-kg", path=str(folder), n_test=6, n_eval=9)
    with pytest.raises(ProblemError, match="invalid n_test=5000: only"):
        load_problem("wordnet-kg", path=str(folder))
    dropped = load_problem("wordnet-kg", path=str(folder), n_test=6, n_eval=4, batch_size=8, inverses="drop")
    assert dropped.num_train == p.num_train - 6 and dropped.description.endswith(", 6 inverses dropped")
    with pytest.raises(ProblemError, match=r"invalid inverses='no': choose one of keep, drop"):
        load_problem("wordnet-kg", path=str(folder), inverses="no")
    with pytest.raises(ProblemError, match="is not a folder"):
        load_problem("wordnet-kg", path=str(tmp_path / "none"))
    with pytest.raises(ProblemError, match=r"wordnet data not found in .*: run `shmopt data fetch wordnet`"):
        load_problem("wordnet-kg", data_dir=str(tmp_path / "empty"))
