"""Small folders of generated messages in the layout of the SpamAssassin data package (spam-1/,
easy-ham-1/, a .json beside each .txt, file_list.json), for the ``spam-logreg`` tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPAMMY = ["free", "money", "click", "offer", "winner", "cash", "viagra", "credit"]
HAMMY = ["meeting", "patch", "kernel", "lunch", "review", "thanks", "build", "release"]
COMMON = ["the", "and", "you", "for", "this", "with"]


def message(words: list[str], subject: str) -> bytes:
    head = (f"From someone@example.org  Mon Aug 26 10:00:00 2002\nReceived: from relay.example.org\n"
            f"Subject: {subject}\nContent-Type: text/plain\n\n")
    return head.encode() + " ".join(words).encode() + b"\n\xff\xfe broken bytes\n"


def write_corpus(root: Path, n: int = 60, seed: int = 0, listing: bool = True) -> Path:
    """``n`` messages, a third spam, in spam-1/ and easy-ham-1/ (+ file_list.json)."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        spam = i % 3 == 0
        folder = "spam-1" if spam else "easy-ham-1"
        own = SPAMMY if spam else HAMMY
        words = list(rng.choice(own, 6)) + list(rng.choice(COMMON + SPAMMY + HAMMY, 4))
        (root / folder).mkdir(parents=True, exist_ok=True)
        name = f"{folder}/{i:05d}.{i:032x}.txt"
        (root / name).write_bytes(message(words, "weekly news" if i % 2 else "Hello"))
        (root / name).with_suffix(".json").write_text(json.dumps({"id": f"{i:05d}", "group": folder}))
        names.append(name)
    if listing:
        (root / "file_list.json").write_text(json.dumps(names))
    return root
