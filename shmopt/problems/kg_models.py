"""Knowledge-graph embedding models and their negative-sampling loss.

Entities are rows of an ``nn.Embedding(entities, width, sparse=True)`` table (a shmopt table:
trained by the rows a batch touches); relations are a small dense ``nn.Embedding``. Each model
scores a triple (h, r, t) as ``match(q, e_t)`` with a query ``q`` built from the head and the
relation (or, to rank heads, from the relation and the tail):

* ``distmult`` (Yang et al., ICLR 2015): ``s = <e_h, w_r, e_t> = sum_k e_h,k w_r,k e_t,k``.
* ``complex`` (Trouillon et al., ICML 2016): complex vectors of ``dim`` (real and imaginary halves
  of a ``2 dim`` row), ``s = Re(<e_h, w_r, conj(e_t)>)``.
* ``transe`` (Bordes et al., NeurIPS 2013): ``s = gamma - ||e_h + w_r - e_t||_2``, ``gamma`` =
  :data:`TRANSE_GAMMA` (a fixed margin that lets a true triple score above zero).

Loss (:func:`kg_loss`, the logistic loss of PyTorch-BigGraph and of word2vec's negative
sampling): for every positive triple, ``negatives`` corrupted triples whose tail (or head, a coin
flip per positive) is an entity drawn uniformly,
``L = mean_b [ softplus(-s_b) + mean_j softplus(s_bj) ] + l2 mean_b (||e_h||^2 + ||e_t||^2 + ||w_r||^2)``
with the norms over the positive's looked-up rows. In eval mode the corruptions come from a fixed
generator, so the held-out loss is the same for the same parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KG_MODELS", "KGModel", "kg_loss", "logistic_loss", "corruptions", "TRANSE_GAMMA"]

KG_MODELS = ("distmult", "complex", "transe")
TRANSE_GAMMA = 4.0


class KGModel(nn.Module):
    """Entity table (``sparse=True``) and relation embeddings of one of :data:`KG_MODELS`."""

    def __init__(self, kind: str, entities: int, relations: int, dim: int, init: float = 0.1) -> None:
        super().__init__()
        if kind not in KG_MODELS:
            raise ValueError(f"unknown model {kind!r}; known: {', '.join(KG_MODELS)}")
        self.kind, self.dim = kind, dim
        width = 2 * dim if kind == "complex" else dim
        # one initialisation of the (large) table: the weights are given, not drawn twice
        self.entity = nn.Embedding(entities, width, sparse=True,
                                   _weight=torch.empty(entities, width).normal_(std=init))
        mean = 1.0 if kind == "distmult" else 0.0      # bilinear models start near the identity
        rel = torch.empty(relations, width).normal_(mean=mean, std=init)
        if kind == "complex":
            rel[:, :dim] += 1.0
        self.relation = nn.Embedding(relations, width, _weight=rel)

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        """``q`` with ``score(h, r, t) = match(q, e_t)`` (entity rows ``h``, relation rows ``r``)."""
        if self.kind == "distmult":
            return h * r
        if self.kind == "transe":
            return h + r
        (hr, hi), (rr, ri) = h.chunk(2, -1), r.chunk(2, -1)
        return torch.cat((hr * rr - hi * ri, hr * ri + hi * rr), -1)

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        """``q`` with ``score(h, r, t) = match(q, e_h)``."""
        if self.kind == "distmult":
            return r * t
        if self.kind == "transe":
            return t - r
        (rr, ri), (tr, ti) = r.chunk(2, -1), t.chunk(2, -1)
        return torch.cat((rr * tr + ri * ti, rr * ti - ri * tr), -1)

    def match(self, q: Tensor, e: Tensor) -> Tensor:
        """Scores of queries against entity rows, broadcast over the leading dimensions."""
        if self.kind == "transe":
            return TRANSE_GAMMA - (q - e).norm(dim=-1)
        return (q * e).sum(-1)

    def against_all(self, q: Tensor) -> Tensor:
        """``(B, entities)`` scores of ``B`` queries against every entity."""
        table = self.entity.weight
        if self.kind == "transe":
            return TRANSE_GAMMA - torch.cdist(q, table)
        return q @ table.T

    def forward(self, triples: Tensor) -> Tensor:
        """Scores of ``(B, 3)`` (head, relation, tail) index triples."""
        h, r, t = self.entity(triples[:, 0]), self.relation(triples[:, 1]), self.entity(triples[:, 2])
        return self.match(self.tail_query(h, r), t)


_EVAL_SEED = 12345


def corruptions(b: int, negatives: int, entities: int,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(``(b, negatives)`` entities drawn uniformly, ``(b, 1)`` True where they replace the tail
    and False where they replace the head: a coin flip per positive)."""
    corrupt = torch.randint(0, entities, (b, negatives), generator=generator)
    return corrupt, torch.rand(b, 1, generator=generator) < 0.5


def logistic_loss(model: KGModel, h: Tensor, r: Tensor, t: Tensor, neg: Tensor, tail_side: Tensor,
                  l2: float = 0.0) -> Tensor:
    """The loss of the module docstring from looked-up rows: positives ``h``, ``r``, ``t``
    (``(B, w)``), the negatives' entity rows ``neg`` (``(B, k, w)``), ``tail_side`` (``(B, 1)``)."""
    qt, qh = model.tail_query(h, r), model.head_query(r, t)
    pos = model.match(qt, t)
    scores = model.match(torch.where(tail_side, qt, qh).unsqueeze(1), neg)
    loss = F.softplus(-pos).mean() + F.softplus(scores).mean()
    if l2:
        loss = loss + l2 * ((h * h).sum(-1) + (t * t).sum(-1) + (r * r).sum(-1)).mean()
    return loss


def kg_loss(model: nn.Module, batch: tuple[Tensor, ...], negatives: int = 10, l2: float = 0.0) -> Tensor:
    """Logistic negative-sampling loss of a batch of ``(B, 3)`` triples (the module docstring)."""
    triples = batch[0]
    gen = None if model.training else torch.Generator().manual_seed(_EVAL_SEED)
    corrupt, tail_side = corruptions(len(triples), negatives, model.entity.num_embeddings, gen)
    h, r, t = model.entity(triples[:, 0]), model.relation(triples[:, 1]), model.entity(triples[:, 2])
    return logistic_loss(model, h, r, t, model.entity(corrupt), tail_side, l2)
