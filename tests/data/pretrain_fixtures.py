"""A tiny vocabulary and corpus for the pretraining-data tests (hermetic: written by the tests).

Words are made of syllables: the first is a whole-word piece ("ka"), the others continuations
("##lo"), so "kalomi" tokenizes to ka ##lo ##mi and whole-word masking has real groups to keep.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

SYLLABLES = ("ka", "lo", "mi", "nu", "pe", "ri", "so", "tu")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB = [*SPECIALS, *SYLLABLES, *(f"##{s}" for s in SYLLABLES), "."]


def write_vocab(directory: Path, drop: str | None = None) -> Path:
    """vocab.txt of VOCAB (without ``drop``) in ``directory``."""
    path = directory / "vocab.txt"
    path.write_text("".join(f"{t}\n" for t in VOCAB if t != drop), encoding="utf-8")
    return path


def vocab_dict() -> dict[str, int]:
    return {t: i for i, t in enumerate(VOCAB)}


def sentence(rng: random.Random) -> str:
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 1, 1, 2, 3)))) for _ in range(rng.randint(2, 18))]
    return " ".join(words) + " ."


def write_corpus(directory: Path, files: int = 2, documents: int = 12, seed: int = 0) -> list[Path]:
    """Text files in Google's format: one sentence per line, a blank line between documents."""
    rng = random.Random(seed)
    paths = []
    for f in range(files):
        docs = ["\n".join(sentence(rng) for _ in range(rng.randint(1, 14))) for _ in range(documents)]
        path = directory / f"corpus-{f}.txt"
        path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def random_rows(rng: np.random.Generator, rows: int, width: int, vocab_size: int = len(VOCAB)):
    """Unmasked rows [CLS] A [SEP] B [SEP] of random lengths: ids (B, L), lengths, a_lengths."""
    lengths = rng.integers(5, width + 1, rows)
    a_lengths = np.array([rng.integers(3, n - 1) for n in lengths])  # A and B both non-empty
    ids = rng.integers(len(SPECIALS), vocab_size, (rows, width))
    col = np.arange(width)[None, :]
    ids[col >= lengths[:, None]] = 0
    ids[:, 0] = 2
    ids[np.arange(rows), a_lengths - 1] = 3
    ids[np.arange(rows), lengths - 1] = 3
    return ids, lengths, a_lengths
