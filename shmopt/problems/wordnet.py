"""WordNet's database files (``wndb``) read as a knowledge graph, and a seeded held-out split.

Source: WordNet 3.0 (Princeton University; Miller 1995), the ``data.noun``, ``data.verb``,
``data.adj`` and ``data.adv`` files that ``shmopt data fetch wordnet`` keeps. Each data line is

    synset_offset lex_filenum ss_type w_cnt word lex_id ... p_cnt
        [ptr_symbol synset_offset pos source/target]... [frames] | gloss

(``w_cnt`` two hex digits, ``p_cnt`` three decimal digits; the licence header lines start with two
spaces). Entities are the synsets, keyed by (part of speech, offset), the adjective satellites
(``s``) being adjectives (``a``) as the pointers name them. A pointer whose ``source/target`` is
``0000`` relates two synsets (a *semantic* pointer) and gives the triple (synset, pointer symbol,
target synset); one that names words (``source/target`` != ``0000``: antonyms, derivations,
pertainyms ...) relates two words, not synsets, and is dropped. A triple given twice is kept
once. WordNet 3.0 then has 117,659 synsets and 285,348 triples of 22 pointer symbols (no
duplicate among them), both directions of each relation included (``@`` hypernym and ``~``
hyponym), as in WN18 (Bordes et al. 2013), which was drawn from the same source.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shmopt.errors import DataError

__all__ = ["WORDNET_FILES", "WordNetGraph", "read_wordnet", "held_out_split"]

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


@dataclass(frozen=True)
class WordNetGraph:
    """Synsets (``"n.00001740"``), their first word, pointer symbols and the (head, relation,
    tail) index triples; ``lexical`` and ``duplicates`` count the pointers dropped."""

    synsets: list[str]
    words: list[str]
    relations: list[str]
    triples: np.ndarray
    lexical: int
    duplicates: int


def _parse(line: str, where: str) -> tuple[str, str, list[tuple[str, str, str]]]:
    """(synset key, first word, [(symbol, target key, source/target)]) of one data line."""
    fields = line.split(" | ", 1)[0].split()
    try:
        offset, ss_type, w_cnt = fields[0], fields[2], int(fields[3], 16)
        at = 4 + 2 * w_cnt
        p_cnt = int(fields[at])
        ptrs = fields[at + 1: at + 1 + 4 * p_cnt]
        if len(ptrs) != 4 * p_cnt or not offset.isdigit() or ss_type not in "nvasr" or len(ss_type) != 1:
            raise ValueError
    except (IndexError, ValueError):
        raise DataError(f"{where}: not a WordNet data line (synset_offset lex_filenum ss_type w_cnt "
                        f"word lex_id ... p_cnt pointers... | gloss)") from None
    key = f"{'a' if ss_type == 's' else ss_type}.{offset}"
    out = [(ptrs[i], f"{ptrs[i + 2]}.{ptrs[i + 1]}", ptrs[i + 3]) for i in range(0, len(ptrs), 4)]
    return key, fields[4], out


def read_wordnet(folder: str | Path) -> WordNetGraph:
    """The knowledge graph of the WordNet data files in ``folder`` (see the module docstring).
    Raises :class:`DataError` (one line) for a missing file, a malformed line or a pointer to a
    synset that no file defines."""
    folder = Path(folder)
    keys: dict[str, int] = {}
    words: list[str] = []
    raw: list[tuple[int, str, str]] = []
    lexical = 0
    for name in WORDNET_FILES:
        path = folder / name
        try:
            lines = path.read_text(encoding="latin-1").splitlines()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("  "):
                continue
            key, word, ptrs = _parse(line, f"{path}:{n}")
            if key in keys:
                raise DataError(f"{path}:{n}: synset {key} is defined twice")
            keys[key] = len(keys)
            words.append(word)
            for symbol, target, source_target in ptrs:
                if source_target != "0000":
                    lexical += 1
                else:
                    raw.append((keys[key], symbol, target))
    relations = sorted({s for _, s, _ in raw})
    rel = {s: i for i, s in enumerate(relations)}
    triples = np.empty((len(raw), 3), dtype=np.int64)
    for i, (head, symbol, target) in enumerate(raw):
        if target not in keys:
            raise DataError(f"{folder}: a {symbol!r} pointer of synset {list(keys)[head]} names synset "
                            f"{target}, which no data file defines")
        triples[i] = (head, rel[symbol], keys[target])
    unique = np.unique(triples, axis=0) if len(triples) else triples
    return WordNetGraph(list(keys), words, relations, unique, lexical, len(triples) - len(unique))


def held_out_split(triples: np.ndarray, n_test: int, generator: torch.Generator,
                   drop_pairs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: ``n_test`` triples drawn in a seeded random order, each taken only
    if its head, its tail and its relation still occur in another training triple, so that every
    test entity and relation has been trained. Raises :class:`DataError` when too few qualify.

    ``drop_pairs``: taking (h, r, t) also takes every other triple between h and t, either way
    and of any relation (the hyponym triple of a held-out hypernym triple) out of training, into
    neither set, so that no held-out triple can be read off its reverse (WN18RR's point,
    Dettmers et al. 2018). The checks then count the training triples left after that."""
    n = len(triples)
    order = torch.randperm(n, generator=generator).numpy()
    heads, tails = triples[:, 0], triples[:, 2]
    ent = np.bincount(triples[:, [0, 2]].ravel(), minlength=int(triples[:, [0, 2]].max()) + 1)
    rel = np.bincount(triples[:, 1])
    pair = np.minimum(heads, tails) * len(ent) + np.maximum(heads, tails)
    by_pair = np.argsort(pair, kind="stable")
    sorted_pairs = pair[by_pair]
    out = np.zeros(n, dtype=bool)               # out of training: held out or dropped
    test: list[int] = []
    for i in order:
        if len(test) == n_test:
            break
        h, t = int(heads[i]), int(tails[i])
        if out[i] or h == t:
            continue
        if drop_pairs:
            lo, hi = np.searchsorted(sorted_pairs, pair[i]), np.searchsorted(sorted_pairs, pair[i], "right")
            group = by_pair[lo:hi]
        else:
            group = np.array([i])
        rels, counts = np.unique(triples[group, 1], return_counts=True)
        if ent[h] - len(group) < 1 or ent[t] - len(group) < 1 or (rel[rels] - counts < 1).any():
            continue
        ent[h] -= len(group)
        ent[t] -= len(group)
        rel[rels] -= counts
        out[group] = True
        test.append(int(i))
    if len(test) < n_test:
        raise DataError(f"only {len(test)} of the {n} triples can be held out with their entities still in "
                        f"training; ask for fewer than {n_test}")
    return np.flatnonzero(~out), np.asarray(test, dtype=np.int64)
