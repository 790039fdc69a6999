"""The peer of bench/test_skipgram.py: gensim's Word2Vec (skip-gram, negative sampling; its
training loop is C, Hogwild threads over shared arrays), given the same token lists, window, dim,
negatives, min_count, subsampling and epochs as shmopt's ``skipgram`` problem.

gensim drops the words of a "sentence" after its first 10,000 (``MAX_WORDS_IN_BATCH``), and a
novel is one token stream of 100,000+ words: the documents are given to it cut in pieces of
10,000 words (shmopt's windows cross those cuts: 0.02% of the pairs).

Its vectors are scored by shmopt's own metric code (shmopt/problems/word_tests.py), after every
epoch and before the first (from a callback: the copy of the vectors is the only work added to
the training time).
"""
from __future__ import annotations

import time

import torch

from shmopt.problems import word_tests
from shmopt.problems.skipgram import load_word_tests


class _Vectors:
    """What ``word_metrics`` reads: ``vectors()``."""

    def __init__(self, vectors: torch.Tensor) -> None:
        self._v = vectors

    def vectors(self) -> torch.Tensor:
        return self._v


def train_gensim(docs: list[list[str]], *, dim: int, window: int, negatives: int, min_count: int,
                 subsample: float, epochs: int, workers: int, seed: int, data_dir: str | None) -> dict:
    """Train Word2Vec; {seconds, words, words_per_s, vocab, history: [{t, epoch, metrics...}], final_metrics}.
    ``seconds`` is the training time (the vocabulary scan, gensim's start-up, is ``startup_s``)."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec
    from gensim.models.word2vec import MAX_WORDS_IN_BATCH

    docs = [d[i:i + MAX_WORDS_IN_BATCH] for d in docs for i in range(0, len(d), MAX_WORDS_IN_BATCH)]
    marks: list[tuple[float, torch.Tensor]] = []

    class Mark(CallbackAny2Vec):
        def on_train_begin(self, model) -> None:
            self.on_epoch_end(model)

        def on_epoch_end(self, model) -> None:
            marks.append((time.perf_counter(), torch.from_numpy(model.wv.vectors.copy())))

    t0 = time.perf_counter()
    model = Word2Vec(vector_size=dim, window=window, negative=negatives, min_count=min_count, sample=subsample,
                     sg=1, hs=0, workers=workers, seed=seed)
    model.build_vocab(docs)
    t1 = time.perf_counter()
    model.train(docs, total_examples=len(docs), epochs=epochs, callbacks=[Mark()])
    seconds = marks[-1][0] - t1
    index = {w: i for i, w in enumerate(model.wv.index_to_key)}
    tests = load_word_tests(data_dir, index)
    history = [{"t": t - t1, "epoch": e, **word_tests.word_metrics(_Vectors(v), (), tests)}
               for e, (t, v) in enumerate(marks)]
    words = epochs * sum(len(d) for d in docs)
    return {"seconds": seconds, "startup_s": t1 - t0, "words": words, "words_per_s": words / seconds,
            "vocab": len(index), "history": history, "final_metrics": history[-1]}
