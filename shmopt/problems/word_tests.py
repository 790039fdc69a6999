"""Intrinsic tests of word vectors: word similarity (Spearman) and word analogies (3CosAdd).

* Similarity: ``wordsim353.tsv`` (WordSim-353, Finkelstein et al. 2002) and ``simlex999.txt``
  (SimLex-999, Hill et al. 2015), as gensim's test data ships them: ``word1 TAB word2 TAB score``,
  ``#`` comments. The metric is Spearman's rank correlation ``rho`` between the cosine similarity
  of the two words' vectors and the human scores, over the pairs whose two words are both in the
  vocabulary (their number is reported beside it): ``rho`` = Pearson's correlation of the ranks,
  tied values getting the average of their ranks.
* Analogies: ``questions-words.txt`` (Mikolov et al. 2013): ``a b c d`` per line (``a`` is to
  ``b`` as ``c`` is to ``d``), ``: section`` headers. With unit vectors ``w``, the answer is
  ``argmax_x cos(w_x, w_b - w_a + w_c)`` over the vocabulary without ``a``, ``b``, ``c``
  (3CosAdd); the accuracy counts the questions whose four words are in the vocabulary (also
  reported), as gensim's ``evaluate_word_analogies`` does.

Words are lowercased; the files are read once by the problem and kept as index tensors.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from shmopt.errors import DataError

__all__ = ["read_similarity", "read_analogies", "similarity_pairs", "analogy_questions", "ranks",
           "spearman", "similarity_spearman", "analogy_accuracy", "word_metrics"]

#: rows of the vocabulary scored at once by the analogy test
_CHUNK = 512


def read_similarity(path: str | Path) -> list[tuple[str, str, float]]:
    """``(word1, word2, human score)`` of a WordSim-353 / SimLex-999 file."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        try:
            out.append((parts[0].strip().lower(), parts[1].strip().lower(), float(parts[2])))
        except (IndexError, ValueError):
            raise DataError(f"{path}:{n}: expected 'word1<TAB>word2<TAB>score', got {line[:60]!r}") from None
    return out


def read_analogies(path: str | Path) -> list[tuple[str, str, str, str]]:
    """The ``(a, b, c, d)`` questions of a questions-words file."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith(":"):
            continue
        words = line.lower().split()
        if len(words) != 4:
            raise DataError(f"{path}:{n}: expected four words 'a b c d', got {line[:60]!r}")
        out.append((words[0], words[1], words[2], words[3]))
    return out


def similarity_pairs(rows: list[tuple[str, str, float]], index: dict[str, int]) -> tuple[Tensor, Tensor]:
    """``((P, 2) word indices, (P,) scores)`` of the pairs whose two words are in ``index``."""
    kept = [(index[a], index[b], s) for a, b, s in rows if a in index and b in index]
    pairs = torch.tensor([(a, b) for a, b, _ in kept], dtype=torch.int64).reshape(-1, 2)
    return pairs, torch.tensor([s for _, _, s in kept], dtype=torch.float64)


def analogy_questions(rows: list[tuple[str, str, str, str]], index: dict[str, int]) -> Tensor:
    """``(Q, 4)`` word indices of the questions whose four words are in ``index``."""
    kept = [[index[w] for w in q] for q in rows if all(w in index for w in q)]
    return torch.tensor(kept, dtype=torch.int64).reshape(-1, 4)


def ranks(x: Tensor) -> Tensor:
    """1-based ranks of ``x`` (1-d), ties given the average of the ranks they span."""
    order = torch.argsort(x, stable=True)
    xs = x[order]
    start = torch.ones(len(x), dtype=torch.bool)
    start[1:] = xs[1:] != xs[:-1]
    group = torch.cumsum(start.long(), 0) - 1                 # tie group of each sorted value
    first = torch.nonzero(start).flatten().double()           # 0-based position where a group starts
    size = torch.bincount(group).double()
    out = torch.empty(len(x), dtype=torch.float64)
    out[order] = (first + (size + 1) / 2)[group]
    return out


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation of two 1-d tensors (0.0 when fewer than 2 values or a constant)."""
    if len(x) < 2:
        return 0.0
    rx, ry = ranks(x.double()), ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float((rx.square().sum() * ry.square().sum()).sqrt())
    return float((rx * ry).sum()) / den if den > 0 else 0.0


def _unit(w: Tensor) -> Tensor:
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def similarity_spearman(vectors: Tensor, pairs: Tensor, scores: Tensor) -> float:
    """Spearman's rho of the pairs' cosine similarities against ``scores``."""
    u = _unit(vectors[pairs.reshape(-1)].double()).reshape(-1, 2, vectors.shape[1])
    return spearman((u[:, 0] * u[:, 1]).sum(-1), scores)


def analogy_accuracy(vectors: Tensor, questions: Tensor) -> float:
    """Share of the questions ``(a, b, c, d)`` whose 3CosAdd answer is ``d`` (0.0 when none)."""
    if len(questions) == 0:
        return 0.0
    unit = _unit(vectors.float())
    right = 0
    for q in questions.split(_CHUNK):
        target = unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]
        scores = target @ unit.T
        scores.scatter_(1, q[:, :3], float("-inf"))
        right += int((scores.argmax(1) == q[:, 3]).sum())
    return right / len(questions)


def word_metrics(model: nn.Module, batch: tuple[Tensor, ...], tests: dict[str, Tensor]) -> dict[str, float]:
    """The metrics of ``model.vectors()`` (the batch is not used): ``NAME_spearman`` and
    ``NAME_pairs`` for every ``NAME_pairs``/``NAME_scores`` similarity test in ``tests``, and
    ``analogy_accuracy``/``analogy_questions`` for ``tests["analogy"]``."""
    vectors = model.vectors().detach()
    out: dict[str, float] = {}
    for key, pairs in tests.items():
        if key.endswith("_pairs"):
            name = key[: -len("_pairs")]
            out[f"{name}_spearman"] = similarity_spearman(vectors, pairs, tests[f"{name}_scores"])
            out[f"{name}_pairs"] = float(len(pairs))
    if "analogy" in tests:
        out["analogy_accuracy"] = analogy_accuracy(vectors, tests["analogy"])
        out["analogy_questions"] = float(len(tests["analogy"]))
    return out
