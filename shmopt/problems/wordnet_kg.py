"""``wordnet-kg``: knowledge-graph embeddings of WordNet 3.0 (117,659 synsets, 285,348 triples,
22 relations; :mod:`.wordnet`), trained by negative sampling, ranked with filtered MRR and Hits@10.

Data: the WordNet data files as ``shmopt data fetch wordnet`` keeps them (:mod:`.packages`), or a
folder of a user's own ``data.noun``/``data.verb``/``data.adj``/``data.adv`` (``-o path=...``).
A seeded split holds out ``n_test`` triples (5,000) whose entities and relation also occur in
training (:func:`.wordnet.held_out_split`); there is no validation set. WordNet stores most
relations both ways, so a held-out triple's inverse is usually a training triple (as in WN18);
``inverses=drop`` drops from training every triple between the two synsets of a held-out triple
(as WN18RR did by removing inverse relations) and keeps it only for the filtering.

Model (:mod:`.kg_models`): ``distmult`` (default), ``complex`` or ``transe``, an entity table
``nn.Embedding(117659, dim, sparse=True)`` and dense relation embeddings; loss: logistic loss of
each training triple against ``negatives`` uniformly corrupted heads or tails, + ``l2`` x the
squared norms of the positive's rows. Metric (:mod:`.kg_rank`): ``mrr`` and ``hits@10``, filtered
against every known triple, over both sides of the first ``n_eval`` held-out triples (the
supervisor ranks them at every evaluation: ``n_eval x 2 x 117,659`` scores).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from shmopt.checks import choice, integer, number
from shmopt.errors import DataError, ProblemError
from shmopt.problems.base import Problem, option_checks, seeded
from shmopt.problems.kg_models import KG_MODELS, KGModel, kg_loss
from shmopt.problems.kg_rank import FilteredRanking
from shmopt.problems.packages import fetched, users_path
from shmopt.problems.wordnet import WORDNET_FILES, WordNetGraph, held_out_split, read_wordnet

__all__ = ["wordnet_kg", "load_wordnet", "WORDNET_PROBLEMS"]

_NAME = "wordnet-kg"


def _folder(data_dir: str | None, path: str | None) -> Path:
    if path is not None:
        return users_path(_NAME, path, f"a folder (one holding WordNet's {', '.join(WORDNET_FILES)})",
                          folder=True)
    return fetched("wordnet", data_dir)


def load_wordnet(folder: str | Path) -> WordNetGraph:
    """The graph of the WordNet files in ``folder`` (a ProblemError naming the defect otherwise)."""
    try:
        return read_wordnet(folder)
    except DataError as exc:
        raise ProblemError(f"problem {_NAME!r}: {exc}") from None


def wordnet_kg(model: str = "distmult", dim: int = 64, negatives: int = 10, l2: float = 0.0,
               seed: int = 0, batch_size: int = 512, n_test: int = 5000, n_eval: int = 500,
               inverses: str = "keep", data_dir: str | None = None, path: str | None = None) -> Problem:
    """The ``wordnet-kg`` problem (see the module docstring)."""
    with option_checks(_NAME):
        model = choice("model", model, KG_MODELS)
        dim, negatives = integer("dim", dim, 1), integer("negatives", negatives, 1)
        l2, g = number("l2", l2, ge=0), seeded(seed)
        n_test = integer("n_test", n_test, 1)
        n_eval = integer("n_eval", n_eval, 1, n_test)
        inverses = choice("inverses", inverses, ("keep", "drop"))
    graph = load_wordnet(_folder(data_dir, path))
    try:
        train_idx, test_idx = held_out_split(graph.triples, n_test, g, drop_pairs=inverses == "drop")
    except DataError as exc:
        raise ProblemError(f"problem {_NAME!r}: invalid n_test={n_test}: {exc}") from None
    triples = torch.from_numpy(graph.triples)
    train, test = triples[train_idx].contiguous(), triples[test_idx].contiguous()
    n_ent, n_rel = len(graph.synsets), len(graph.relations)
    dropped = len(triples) - len(train) - n_test
    return Problem(
        name=_NAME,
        model=partial(KGModel, model, n_ent, n_rel, dim),
        loss=partial(kg_loss, negatives=negatives, l2=l2),
        metrics=FilteredRanking(triples, n_rel),
        train=(train,),
        eval=(test[:n_eval].contiguous(),),
        batch_size=batch_size,
        lr={"sgd": 0.1, "adagrad": 0.1, "amsgrad": 0.01, "adam": 0.01},
        description=f"WordNet ({n_ent:,} synsets, {len(triples):,} triples, {n_rel} relations): {model}, "
                    f"dim={dim}, {negatives} negatives, {n_test:,} held out, {n_eval:,} ranked"
                    + (f", {dropped:,} inverses dropped" if dropped else ""),
    )


WORDNET_PROBLEMS = {_NAME: wordnet_kg}
