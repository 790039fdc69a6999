"""Every built-in problem by name: generated data (builtin.py, embedding.py) and real data shipped in packages
(real.py, movielens.py, wordnet_kg.py, spam_logreg.py, skipgram.py), images read from files or packages
(images.py)."""
from __future__ import annotations

from .builtin import SYNTHETIC_PROBLEMS
from .embedding import EMBEDDING_PROBLEMS
from .images import IMAGE_PROBLEMS
from .movielens import MOVIELENS_PROBLEMS
from .real import REAL_PROBLEMS
from .skipgram import SKIPGRAM_PROBLEMS
from .spam_logreg import SPAM_PROBLEMS
from .wordnet_kg import WORDNET_PROBLEMS

BUILTIN_PROBLEMS = {**SYNTHETIC_PROBLEMS, **EMBEDDING_PROBLEMS, **REAL_PROBLEMS, **IMAGE_PROBLEMS,
                    **MOVIELENS_PROBLEMS, **WORDNET_PROBLEMS, **SPAM_PROBLEMS, **SKIPGRAM_PROBLEMS}
