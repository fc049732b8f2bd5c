"""Google's sentence-pair instances (create_pretraining_data.py), over token spans of a corpus.

For each document and dupe round, Google's ``create_instances_from_document``:

* the target length is max_seq_length - 3, or with probability short_seq_prob a random length in
  [2, max_seq_length - 3];
* segments (sentences) are accumulated into a chunk until it reaches the target or the document
  ends; A is the first ``a_end`` segments of the chunk (``a_end`` random in [1, len - 1]);
* B is the rest of the chunk, or (always for a one-segment chunk, else with probability 1/2) a
  random span of another document: segments from a random start until B reaches target - len(A);
  the chunk's unused segments are then put back, to start the next chunk;
* while A + B is longer than max_seq_length - 3, one token is cut from the longer side (B on
  ties), from the front or the back with probability 1/2 each.

The corpus is a token store (``bertkit.data.corpus``): every document's segments lie back to back
in one token array, so A and B are each one contiguous span ``tokens[start:end]`` and an instance
is four integers and a flag (a ``Pair``). ``document_pairs`` makes the same ``rng`` calls in the
same order as Google's function, so with Google's single ``random.Random`` it reproduces Google.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["DocumentIndex", "Pair", "build_rows", "document_pairs", "truncate_pair"]


@dataclass(frozen=True)
class Pair:
    """One instance before masking: ``[CLS] tokens[a_start:a_end] [SEP] tokens[b_start:b_end] [SEP]``."""

    a_start: int
    a_end: int
    b_start: int
    b_end: int
    is_random_next: bool


class DocumentIndex:
    """Documents as segment ranges and segments as token ranges, optionally seen in another order.

    segments: int64 (S+1,) token offsets, segment s = tokens[segments[s]:segments[s+1]];
    documents: int64 (D+1,) segment offsets; order: the store document behind each document index
    (Google's shuffled document list), or None for store order.
    """

    def __init__(self, segments: np.ndarray, documents: np.ndarray, order: list[int] | None = None):
        self.segments = segments
        self.documents = documents
        self.order = order

    def __len__(self) -> int:
        return len(self.documents) - 1

    def segment_range(self, doc: int) -> tuple[int, int]:
        """[first, last) segments of document ``doc``."""
        d = doc if self.order is None else self.order[doc]
        return int(self.documents[d]), int(self.documents[d + 1])

    def segment_lengths(self, doc: int) -> list[int]:
        """Tokens in each segment of document ``doc``."""
        first, last = self.segment_range(doc)
        return np.diff(self.segments[first:last + 1]).tolist()


def truncate_pair(a: tuple[int, int], b: tuple[int, int], max_num_tokens: int,
                  rng: random.Random) -> tuple[tuple[int, int], tuple[int, int]]:
    """Google's truncate_seq_pair on spans: while too long, cut one token from the longer side (B on
    ties), from the front if rng.random() < 0.5, else from the back.

    The sides follow a fixed pattern, so the cuts are counted rather than made one by one: first
    the longer side (B on ties) alone until the sides are level (B: one past level), then the
    other side and it by turns. The rng calls are Google's: one random() per token cut.
    """
    (a0, a1), (b0, b1) = a, b
    la, lb = a1 - a0, b1 - b0
    cuts = la + lb - max_num_tokens
    if cuts <= 0:
        return a, b
    fronts = [rng.random() < 0.5 for _ in range(cuts)]
    run = min(cuts, la - lb if la > lb else lb - la + 1)
    first_fronts, first_cuts = sum(fronts[:run]) + sum(fronts[run + 1::2]), run + len(fronts[run + 1::2])
    other_fronts, other_cuts = sum(fronts[run::2]), len(fronts[run::2])
    if la > lb:  # A is the first side
        return (a0 + first_fronts, a1 - first_cuts + first_fronts), (b0 + other_fronts, b1 - other_cuts + other_fronts)
    return (a0 + other_fronts, a1 - other_cuts + other_fronts), (b0 + first_fronts, b1 - first_cuts + first_fronts)


def _random_next(index: DocumentIndex, doc: int, target_b: int, rng: random.Random) -> tuple[int, int]:
    """B from another document: segments from a random start until it holds target_b tokens."""
    for _ in range(10):  # Google's 10 tries to avoid the document itself
        other = rng.randint(0, len(index) - 1)
        if other != doc:
            break
    first, last = index.segment_range(other)
    start = first + rng.randint(0, last - first - 1)
    end = start
    while end < last:
        end += 1
        if index.segments[end] - index.segments[start] >= target_b:
            break
    return int(index.segments[start]), int(index.segments[end])


def document_pairs(index: DocumentIndex, doc: int, max_seq_length: int, short_seq_prob: float,
                   rng: random.Random) -> Iterator[Pair]:
    """The instances of one document for one dupe round, Google's create_instances_from_document.

    The generator draws from ``rng`` lazily, so a caller that masks each pair with the same ``rng``
    before asking for the next makes Google's calls in Google's order.
    """
    max_num_tokens = max_seq_length - 3
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    first, _ = index.segment_range(doc)
    lengths = index.segment_lengths(doc)
    chunk_start, chunk_tokens, i = 0, 0, 0
    while i < len(lengths):
        chunk_tokens += lengths[i]
        if i == len(lengths) - 1 or chunk_tokens >= target:
            pair, used = _chunk_pair(index, doc, first + chunk_start, i - chunk_start + 1, target, rng)
            a, b = truncate_pair((pair.a_start, pair.a_end), (pair.b_start, pair.b_end), max_num_tokens, rng)
            yield Pair(*a, *b, pair.is_random_next)
            i = chunk_start + used - 1  # unused segments of a random-next chunk go back
            chunk_start, chunk_tokens = i + 1, 0
        i += 1


def _chunk_pair(index: DocumentIndex, doc: int, chunk_first: int, chunk_len: int, target: int,
                rng: random.Random) -> tuple[Pair, int]:
    """A and B, untruncated, from a chunk of ``chunk_len`` segments starting at segment ``chunk_first``;
    also how many of the chunk's segments were used (the rest are put back)."""
    seg = index.segments
    a_end = rng.randint(1, chunk_len - 1) if chunk_len >= 2 else 1
    a = (int(seg[chunk_first]), int(seg[chunk_first + a_end]))
    if chunk_len == 1 or rng.random() < 0.5:
        b = _random_next(index, doc, target - (a[1] - a[0]), rng)
        return Pair(*a, *b, True), a_end
    b = (a[1], int(seg[chunk_first + chunk_len]))
    return Pair(*a, *b, False), chunk_len


def build_rows(tokens: np.ndarray, pairs: list[Pair], max_seq_length: int, cls_id: int,
               sep_id: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unmasked rows of pairs: ids int64 (B, L) padded with pad_id, lengths (B,), a_lengths (B,).

    a_lengths is the length of ``[CLS] A [SEP]``: token_type_ids are 0 before it, 1 from it.
    """
    spans = np.array([(p.a_start, p.a_end, p.b_start, p.b_end) for p in pairs], dtype=np.int64).reshape(-1, 4)
    a0, la, b0, lb = spans[:, :1], spans[:, 1:2] - spans[:, :1], spans[:, 2:3], spans[:, 3:4] - spans[:, 2:3]
    col = np.arange(max_seq_length)[None, :]  # (1, L)
    in_a = (col >= 1) & (col <= la)
    in_b = (col >= la + 2) & (col < la + lb + 2)
    where = np.where(in_a, a0 + col - 1, np.where(in_b, b0 + col - la - 2, 0))  # (B, L) token index
    ids = np.where(in_a | in_b, tokens[where], pad_id).astype(np.int64)
    ids[:, 0] = cls_id
    ids[(col == la + 1) | (col == la + lb + 2)] = sep_id
    return ids, (la + lb + 3)[:, 0], (la + 2)[:, 0]
