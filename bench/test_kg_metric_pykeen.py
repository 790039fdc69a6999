"""A check of ``wordnet-kg``'s filtered ranking (shmopt/problems/kg_rank.py) against pykeen's
``RankBasedEvaluator`` (the ``peers`` extra: pip install -e '.[peers]').

On the small graphs pykeen ships in its wheel (Nations: 14 entities, UMLS: 135, Kinships: 104),
a pykeen DistMult model with its random initial weights is evaluated by pykeen (filtered with the
training and validation triples, both sides, the "realistic" rank) and by shmopt's
``FilteredRanking`` on a KGModel holding the same entity and relation vectors. The MRR and
Hits@10 must agree to float rounding. No training is needed: the ranks of random vectors test
the filtering and the tie rule as well as trained ones.

    pytest bench/test_kg_metric_pykeen.py
"""
from __future__ import annotations

import pytest
import torch

from shmopt.problems.kg_models import KGModel
from shmopt.problems.kg_rank import FilteredRanking

pykeen_datasets = pytest.importorskip("pykeen.datasets", reason="pykeen is a peer: pip install -e '.[peers]'")
pykeen_evaluation = pytest.importorskip("pykeen.evaluation")
pykeen_models = pytest.importorskip("pykeen.models")


@pytest.mark.parametrize("name", ["Nations", "UMLS", "Kinships"])
def test_filtered_mrr_and_hits_match_pykeen(benchmark, name):
    data = getattr(pykeen_datasets, name)()
    torch.manual_seed(0)
    peer = pykeen_models.DistMult(triples_factory=data.training, embedding_dim=16, random_seed=0)
    peer.eval()
    with torch.no_grad():
        ent = peer.entity_representations[0](indices=None).detach().clone()
        rel = peer.relation_representations[0](indices=None).detach().clone()
    ours = KGModel("distmult", data.num_entities, data.num_relations, 16)
    with torch.no_grad():
        ours.entity.weight.copy_(ent)
        ours.relation.weight.copy_(rel)
    test = data.testing.mapped_triples.long()
    sample = test[:5]
    assert torch.allclose(ours(sample), peer.score_hrt(sample).squeeze(-1), atol=1e-5)

    evaluator = pykeen_evaluation.RankBasedEvaluator()
    result = benchmark.pedantic(lambda: evaluator.evaluate(
        peer, test, additional_filter_triples=[data.training.mapped_triples, data.validation.mapped_triples],
        batch_size=256, use_tqdm=False), rounds=1, iterations=1)
    known = torch.cat([data.training.mapped_triples, data.validation.mapped_triples, test]).long()
    mine = FilteredRanking(known, data.num_relations)(ours.eval(), (test,))
    theirs = {"mrr": result.get_metric("both.realistic.inverse_harmonic_mean_rank"),
              "hits@10": result.get_metric("both.realistic.hits_at_10")}
    benchmark.extra_info.update(kind="kg_metric_check", dataset=name, entities=data.num_entities,
                                test_triples=len(test), shmopt=mine, pykeen=theirs)
    assert mine["mrr"] == pytest.approx(theirs["mrr"], abs=1e-5)
    assert mine["hits@10"] == pytest.approx(theirs["hits@10"], abs=1e-5)
