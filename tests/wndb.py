"""Writes WordNet database files (``wndb`` format) for the tests: a licence header, then one line
per synset with its words and pointers."""
from __future__ import annotations

from pathlib import Path

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by\n" \
         "  2 Princeton University under the following license.\n"
FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "s": "data.adj", "r": "data.adv"}


def line(offset: int, ss_type: str, words: list[str], pointers: list[tuple[str, int, str, str]],
         gloss: str = "a gloss") -> str:
    """One data line; a pointer is (symbol, target offset, target pos, source/target)."""
    parts = [f"{offset:08d}", "03", ss_type, f"{len(words):02x}", *(f"{w} 0" for w in words),
             f"{len(pointers):03d}", *(f"{s} {o:08d} {p} {st}" for s, o, p, st in pointers)]
    return " ".join(parts) + f" | {gloss}  \n"


def write_wndb(folder: Path, synsets: list[tuple[int, str, list[str], list[tuple[str, int, str, str]]]]) -> Path:
    """data.noun, data.verb, data.adj, data.adv in ``folder`` holding ``synsets`` (offset,
    ss_type, words, pointers); every file gets the header, even one without synsets."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = {name: HEADER for name in set(FILES.values())}
    for offset, ss_type, words, pointers in synsets:
        texts[FILES[ss_type]] += line(offset, ss_type, words, pointers)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="latin-1")
    return folder


def chain_graph(n: int) -> list[tuple[int, str, list[str], list[tuple[str, int, str, str]]]]:
    """``n`` noun synsets: each a hyponym (``@``) of the previous and of synset ``i // 3``, with
    the inverse pointers (``~``), as WordNet stores both directions."""
    ptrs: dict[int, list] = {i: [] for i in range(n)}
    for i in range(1, n):
        for parent in {i - 1, i // 3}:
            ptrs[i].append(("@", 100 + parent, "n", "0000"))
            ptrs[parent].append(("~", 100 + i, "n", "0000"))
    return [(100 + i, "n", [f"thing_{i}"], ptrs[i]) for i in range(n)]
