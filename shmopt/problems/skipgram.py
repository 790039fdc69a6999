"""``skipgram``: word vectors by skip-gram with negative sampling (SGNS; Mikolov et al. 2013,
"Distributed Representations of Words and Phrases and their Compositionality").

Data: Jane Austen's six novels (``-o corpus=janeausten``, ``shmopt data fetch janeausten``) or the
Brown corpus (``-o corpus=brown``, ``shmopt data fetch brown``), read and turned into
``(centre, context)`` index pairs once, in the parent (:mod:`.corpora`: vocabulary with
``min_count``, frequent-word subsampling, dynamic or fixed window). The pairs are the training
tensor, one pair a sample; a seeded 1% of them (at most 20,000) is also the eval set of the loss.

Model: an input table ``V`` and an output table ``U``, both ``nn.Embedding(vocab, dim,
sparse=True)`` (``V`` uniform in ``±0.5/dim``, ``U`` zero, as word2vec starts them). Loss of a
pair ``(c, o)`` with ``k`` negatives ``n_1..n_k`` drawn from the unigram distribution to the power
0.75: ``-log s(U_o . V_c) - sum_j log s(-U_{n_j} . V_c)`` (``s`` the logistic function), averaged
over the batch. Negatives are drawn in the loss with the worker's torch generator (the engine seeds
it from ``--seed`` and the worker's rank); the eval loss draws them from a fixed seed.

``pool`` (default 64): instead of ``k`` noise words per pair, the batch draws ``M = pool`` noise
words and every pair is scored against all of them, each noise term weighted ``k / M``:
``-log s(U_o . V_c) - (k / M) sum_{m=1..M} log s(-U_{n_m} . V_c)``. Its expectation is the SGNS
objective with ``k`` negatives; the noise scores are one ``(B x d) (d x M)`` matrix product and the
output table's gradient has ``B + M`` rows instead of ``B (1 + k)`` (about 4x the pairs per second on
one core). ``pool=0`` draws ``k`` negatives per pair, as word2vec does.

Metrics (:mod:`.word_tests`, on the input vectors ``V``): ``wordsim_spearman`` (WordSim-353),
``simlex_spearman`` (SimLex-999), ``analogy_accuracy`` (3CosAdd), with their coverage
``wordsim_pairs``, ``simlex_pairs``, ``analogy_questions``; the test files come from
``shmopt data fetch word-tests``.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shmopt.checks import choice, integer, number
from shmopt.errors import DataError, ProblemError
from shmopt.problems import corpora, word_tests
from shmopt.problems.base import Problem, option_checks
from shmopt.problems.packages import fetched, users_path

__all__ = ["SkipGram", "draw_negatives", "sgns_loss", "skipgram", "load_corpus", "load_word_tests",
           "SKIPGRAM_PROBLEMS"]

CORPORA = ("janeausten", "brown")
EVAL_PAIRS = 20_000


class SkipGram(nn.Module):
    """Input and output word tables with sparse gradients."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.inp = nn.Embedding(vocab, dim, sparse=True)
        self.out = nn.Embedding(vocab, dim, sparse=True)
        nn.init.uniform_(self.inp.weight, -0.5 / dim, 0.5 / dim)
        nn.init.zeros_(self.out.weight)

    def forward(self, pairs: Tensor, negatives: Tensor, weight: float = 1.0) -> Tensor:
        """The SGNS loss of each pair, ``(B,)``: ``negatives`` ``(B, k)`` per pair, or ``(M,)`` a pool
        shared by the batch (every pair against every noise word, each term times ``weight``)."""
        v = self.inp(pairs[:, 0])                                        # (B, d)
        pos = F.logsigmoid((self.out(pairs[:, 1]) * v).sum(1))
        if negatives.dim() == 1:
            noise = F.logsigmoid(-(v @ self.out(negatives).T))             # (B, M): one matrix product
        else:
            noise = F.logsigmoid(-torch.bmm(self.out(negatives), v.unsqueeze(2)).squeeze(2))   # (B, k)
        return -(pos + weight * noise.sum(1))

    def vectors(self) -> Tensor:
        """The word vectors (the input table)."""
        return self.inp.weight


def draw_negatives(cdf: Tensor, n: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """``(n, k)`` word indices drawn from the distribution of cumulative probabilities ``cdf``."""
    u = torch.rand(n * k, generator=generator, dtype=torch.float64)
    return torch.searchsorted(cdf, u).clamp_max(len(cdf) - 1).reshape(n, k)


def sgns_loss(model: SkipGram, batch: tuple[Tensor, ...], cdf: Tensor, negatives: int = 5,
              pool: int = 0) -> Tensor:
    """Mean SGNS loss of a batch of ``(centre, context)`` pairs: ``negatives`` noise words per pair
    drawn from ``cdf``, or (``pool`` > 0) ``pool`` noise words shared by the batch, each term
    weighted ``negatives / pool`` (module docstring)."""
    (pairs,) = batch
    gen = None if model.training else torch.Generator().manual_seed(0)
    if pool:
        return model(pairs, draw_negatives(cdf, 1, pool, gen)[0], negatives / pool).mean()
    return model(pairs, draw_negatives(cdf, len(pairs), negatives, gen)).mean()


def _corpus_path(corpus: str, data_dir: str | None, path: str | None) -> Path:
    """janeausten: the ``Rdata.rdb`` file; brown: the folder of ``ca01`` .. ``cr09``."""
    rdb = corpus == "janeausten"
    if path is not None:
        want = "an R lazy-load database (Rdata.rdb)" if rdb else "a folder of ca01 .. cr09"
        return users_path("skipgram", path, want, folder=not rdb)
    folder = fetched(corpus, data_dir)
    return folder / "Rdata.rdb" if rdb else folder


def load_corpus(corpus: str, data_dir: str | None = None, path: str | None = None) -> list[list[str]]:
    """The documents of ``corpus`` as token lists (:mod:`.corpora`)."""
    where = _corpus_path(corpus, data_dir, path)
    try:
        return corpora.read_janeausten(where) if corpus == "janeausten" else corpora.read_brown(where)
    except (DataError, OSError) as exc:
        raise ProblemError(f"problem 'skipgram': cannot read the {corpus} corpus at {where}: {exc}") from None


def load_word_tests(data_dir: str | None, index: dict[str, int]) -> dict[str, Tensor]:
    """The word tests of the ``word-tests`` package as index tensors over ``index``."""
    folder = fetched("word-tests", data_dir, own_path=False)
    files = {"wordsim": "wordsim353.tsv", "simlex": "simlex999.txt", "analogy": "questions-words.txt"}
    tests: dict[str, Tensor] = {}
    try:
        for name in ("wordsim", "simlex"):
            rows = word_tests.read_similarity(folder / files[name])
            tests[f"{name}_pairs"], tests[f"{name}_scores"] = word_tests.similarity_pairs(rows, index)
        questions = word_tests.read_analogies(folder / files["analogy"])
        tests["analogy"] = word_tests.analogy_questions(questions, index)
    except DataError as exc:
        raise ProblemError(f"problem 'skipgram': {exc}") from None
    return tests


def skipgram(corpus: str = "janeausten", dim: int = 100, window: int = 5, negatives: int = 5,
             min_count: int = 5, subsample: float = 1e-3, dynamic: int = 1, pool: int = 64,
             seed: int = 0, batch_size: int = 1024, data_dir: str | None = None,
             path: str | None = None) -> Problem:
    """The ``skipgram`` problem (see the module docstring)."""
    with option_checks("skipgram"):
        corpus = choice("corpus", corpus, CORPORA)
        dim, window = integer("dim", dim, 1), integer("window", window, 1)
        negatives, min_count = integer("negatives", negatives, 1), integer("min_count", min_count, 1)
        subsample = number("subsample", subsample, ge=0)
        dynamic = bool(integer("dynamic", int(dynamic) if isinstance(dynamic, bool) else dynamic, 0, 1))
        pool = integer("pool", pool, 0)
        seed, batch_size = integer("seed", seed, 0), integer("batch_size", batch_size, 1)
    docs = load_corpus(corpus, data_dir, path)
    vocab = corpora.build_vocab(docs, min_count)
    if len(vocab) < 2:
        raise ProblemError(f"problem 'skipgram': only {len(vocab)} word(s) occur {min_count}+ times in "
                           f"the {corpus} corpus; lower min_count")
    tests = load_word_tests(data_dir, vocab.index)
    rng = np.random.default_rng(seed)
    pairs = corpora.skipgram_pairs(corpora.encode(docs, vocab), vocab.counts, window, subsample, dynamic, rng)
    if len(pairs) == 0:
        raise ProblemError(f"problem 'skipgram': the {corpus} corpus gives no training pairs")
    pairs = torch.from_numpy(pairs[rng.permutation(len(pairs))])
    held = pairs[: min(EVAL_PAIRS, max(1, len(pairs) // 100))]
    cdf = torch.from_numpy(corpora.unigram_cdf(vocab.counts))
    words = sum(len(d) for d in docs)
    return Problem(
        name="skipgram",
        model=partial(SkipGram, len(vocab), dim),
        loss=partial(sgns_loss, cdf=cdf, negatives=negatives, pool=pool),
        metrics=partial(word_tests.word_metrics, tests=tests),
        train=(pairs.contiguous(),),
        eval=(held.contiguous(),),
        batch_size=min(batch_size, len(pairs)),
        lr={"sgd": 25.0, "amsgrad": 0.01, "adam": 0.01},   # sgd: word2vec's 0.025 per pair x batch 1024
        description=f"skip-gram, negative sampling: {corpus} ({words:,} words, {len(vocab):,} in the "
                    f"vocabulary, {len(pairs):,} pairs), dim={dim}, window={window}, negatives={negatives}"
                    + (f" from a pool of {pool} per batch" if pool else " per pair"),
    )


SKIPGRAM_PROBLEMS = {"skipgram": skipgram}
