"""Text corpora for word vectors: reading, the vocabulary and the (centre, context) pairs.

* ``janeausten``: the six novels of R's janeaustenr (``emma``, ``mansfieldpark``,
  ``northangerabbey``, ``persuasion``, ``prideprejudice``, ``sensesensibility``: character vectors,
  one element per line of text) in its lazy-load database (:mod:`.rdata`); one document per novel.
* ``brown``: the Brown corpus files ``ca01`` .. ``cr09`` (tokens ``word/TAG``; the tags are
  stripped); one document per file.

Tokens are lowercased words, ``[a-z0-9]+`` with inner apostrophes or hyphens (``don't``,
``well-known``); punctuation is dropped. A document is one token stream: windows cross line and
sentence ends, never documents.

Pairs (word2vec's skip-gram, Mikolov et al. 2013): the tokens below ``min_count`` are removed
first; with ``subsample = t`` a token of corpus frequency ``f`` is kept with probability
``min(1, sqrt(t / f) + t / f)`` (word2vec's C formula); then every kept token at position ``i`` is a
centre with the contexts at ``1 <= |j - i| <= b_i``, where ``b_i = window`` (fixed) or is drawn
uniformly from ``1..window`` (dynamic: nearer words weigh more, on average). Subsampling and the
windows are drawn once, from ``seed``: the pairs are the training set of every epoch.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shmopt.errors import DataError
from shmopt.problems.rdata import read_lazyload

__all__ = ["NOVELS", "BROWN_FILE", "tokenize", "read_janeausten", "read_brown", "Vocab",
           "build_vocab", "encode", "skipgram_pairs", "unigram_cdf"]

NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")
BROWN_FILE = re.compile(r"c[a-r]\d\d")
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """The lowercased words of ``text``."""
    return _WORD.findall(text.lower())


def read_janeausten(rdb: str | Path) -> list[list[str]]:
    """One token list per novel of janeaustenr's lazy-load database ``rdb``."""
    docs = []
    for name in NOVELS:
        obj = read_lazyload(rdb, name)
        if obj.kind != "str":
            raise DataError(f"{rdb}: object {name!r} is a {obj.kind} vector, not the lines of a novel")
        docs.append(tokenize("\n".join(line for line in obj.value if line)))
    return docs


def read_brown(folder: str | Path) -> list[list[str]]:
    """One token list per Brown corpus file (``ca01`` .. ``cr09``) of ``folder``, tags stripped."""
    files = sorted(p for p in Path(folder).iterdir() if BROWN_FILE.fullmatch(p.name))
    if not files:
        raise DataError(f"{folder} has no Brown corpus files (ca01 .. cr09)")
    docs = []
    for f in files:
        words = (tok.rsplit("/", 1)[0] for tok in f.read_text(encoding="utf-8", errors="replace").split())
        docs.append(tokenize(" ".join(words)))
    return docs


@dataclass(frozen=True)
class Vocab:
    """Words by decreasing count (ties alphabetical), their counts, and word -> index."""

    words: tuple[str, ...]
    counts: np.ndarray

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)


def build_vocab(docs: list[list[str]], min_count: int) -> Vocab:
    """The words seen at least ``min_count`` times."""
    counts = Counter(w for doc in docs for w in doc)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return Vocab(tuple(kept), np.array([counts[w] for w in kept], dtype=np.int64))


def encode(docs: list[list[str]], vocab: Vocab) -> list[np.ndarray]:
    """Each document as vocabulary indices, the words outside the vocabulary removed."""
    index = vocab.index
    return [np.array([index[w] for w in doc if w in index], dtype=np.int64) for doc in docs]


def skipgram_pairs(docs: list[np.ndarray], counts: np.ndarray, window: int, subsample: float,
                   dynamic: bool, rng: np.random.Generator) -> np.ndarray:
    """The ``(centre, context)`` index pairs of the encoded documents (module docstring), ``(N, 2)``."""
    total = float(counts.sum())
    keep_p = np.ones(len(counts))
    if subsample > 0:
        ratio = subsample * total / np.maximum(counts, 1)
        keep_p = np.minimum(1.0, np.sqrt(ratio) + ratio)
    out = []
    for doc in docs:
        doc = doc[rng.random(len(doc)) < keep_p[doc]]
        reach = rng.integers(1, window + 1, len(doc)) if dynamic else np.full(len(doc), window)
        for d in range(1, window + 1):
            centre, other = np.arange(len(doc) - d), np.arange(d, len(doc))
            fwd, bwd = reach[centre] >= d, reach[other] >= d
            out.append(np.stack([doc[centre[fwd]], doc[other[fwd]]], axis=1))
            out.append(np.stack([doc[other[bwd]], doc[centre[bwd]]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def unigram_cdf(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """The cumulative distribution of ``count ** power`` (negatives are drawn from it)."""
    p = counts.astype(np.float64) ** power
    return np.cumsum(p / p.sum())
