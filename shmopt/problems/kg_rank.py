"""Filtered ranking metrics of knowledge-graph embeddings: MRR and Hits@10 (Bordes et al. 2013).

For a held-out triple (h, r, t) the model scores every entity as the tail, ``(h, r, ?)``; the
tails ``t'`` of the *other* known true triples ``(h, r, t')`` (training and held-out) are removed
(the "filtered" setting); the rank of ``t`` is ``1 + #{e : s(e) > s(t)} + #{e != t : s(e) = s(t)} / 2``
(the mean of the optimistic and pessimistic ranks, as pykeen's "realistic" rank). Likewise for
the head, ``(?, r, t)``. ``mrr`` is the mean of ``1 / rank`` and ``hits@10`` the share of ranks
<= 10, over both sides of every held-out triple given. Queries are scored in chunks of
``chunk`` triples: memory ``chunk x entities`` floats.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FilteredRanking", "filtered_ranks"]


class _Known:
    """The known answers of ``(key -> answers)``: the rows of ``triples`` sorted by ``key``."""

    def __init__(self, keys: Tensor, answers: Tensor) -> None:
        self.keys, order = keys.sort()
        self.answers = answers[order].contiguous()

    def pairs(self, query_keys: Tensor) -> tuple[Tensor, Tensor]:
        """(query index, known answer) for every known answer of every query key."""
        lo = torch.searchsorted(self.keys, query_keys, right=False)
        hi = torch.searchsorted(self.keys, query_keys, right=True)
        counts = hi - lo
        rows = torch.repeat_interleave(torch.arange(len(query_keys)), counts)
        starts = torch.repeat_interleave(lo - (counts.cumsum(0) - counts), counts)
        return rows, self.answers[starts + torch.arange(len(rows))]


class FilteredRanking:
    """``metrics(model, batch) -> {"mrr", "hits@10"}`` of the held-out triples ``batch[0]``,
    filtering the ``known`` ``(N, 3)`` triples (training and held-out)."""

    def __init__(self, known: Tensor, n_relations: int, chunk: int = 128) -> None:
        known = known.to(torch.int64)
        self.n_relations, self.chunk = n_relations, chunk
        self.tails = _Known(known[:, 0] * n_relations + known[:, 1], known[:, 2])
        self.heads = _Known(known[:, 2] * n_relations + known[:, 1], known[:, 0])

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...]) -> dict[str, float]:
        ranks = filtered_ranks(model, batch[0], self)
        return {"mrr": float((1.0 / ranks).mean()), "hits@10": float((ranks <= 10).float().mean())}


def _ranks(scores: Tensor, target: Tensor, known: tuple[Tensor, Tensor]) -> Tensor:
    """Filtered realistic ranks of ``target`` in each row of ``scores`` (modified in place).

    With the target and the other known answers at -inf, ``S = sum_e sign(s(e) - s(t))`` is
    ``above - below`` over the ``n`` entities and ``above + ties / 2 = (n + S) / 2``: one pass."""
    rows = torch.arange(len(scores))
    true = scores[rows, target].clone()
    scores[known] = float("-inf")                  # every other known answer
    scores[rows, target] = float("-inf")
    signs = scores.sub_(true[:, None]).sign_().sum(1, dtype=torch.float64)
    return 1.0 + (scores.shape[1] + signs) / 2


def filtered_ranks(model: nn.Module, triples: Tensor, ranking: FilteredRanking) -> Tensor:
    """The ``2 N`` filtered ranks of ``N`` triples: tails, then heads."""
    tails, heads = [], []
    r_n = ranking.n_relations
    with torch.no_grad():
        for part in triples.split(ranking.chunk):
            h, r, t = part[:, 0], part[:, 1], part[:, 2]
            eh, wr, et = model.entity(h), model.relation(r), model.entity(t)
            tails.append(_ranks(model.against_all(model.tail_query(eh, wr)), t,
                                ranking.tails.pairs(h * r_n + r)))
            heads.append(_ranks(model.against_all(model.head_query(wr, et)), h,
                                ranking.heads.pairs(t * r_n + r)))
    return torch.cat(tails + heads)
