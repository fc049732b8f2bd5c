"""Google's sentence pairs over token spans: structure, put-back, truncation, rows."""

from __future__ import annotations

import random

import numpy as np

from bertkit.data.instances import (
    DocumentIndex,
    Pair,
    build_rows,
    document_pairs,
    truncate_pair,
)
from bertkit.data.shards import Instances


def _index(docs: list[list[int]]) -> DocumentIndex:
    """Documents given as segment lengths."""
    lengths = [n for doc in docs for n in doc]
    segments = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    documents = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return DocumentIndex(segments, documents)


def _doc_span(index: DocumentIndex, doc: int) -> tuple[int, int]:
    first, last = index.segment_range(doc)
    return int(index.segments[first]), int(index.segments[last])


def _reference_truncate(a, b, max_num_tokens, rng):
    """Google's truncate_seq_pair, one token at a time."""
    (a0, a1), (b0, b1) = a, b
    while (a1 - a0) + (b1 - b0) > max_num_tokens:
        front = rng.random() < 0.5
        if a1 - a0 > b1 - b0:
            a0, a1 = (a0 + 1, a1) if front else (a0, a1 - 1)
        else:
            b0, b1 = (b0 + 1, b1) if front else (b0, b1 - 1)
    return (a0, a1), (b0, b1)


def test_truncation_is_googles_token_by_token_loop():
    g = random.Random(0)
    for _ in range(20000):
        a0, b0 = g.randint(0, 500), g.randint(0, 500)
        a, b = (a0, a0 + g.randint(1, 200)), (b0, b0 + g.randint(1, 200))
        limit, seed = g.randint(2, 250), g.random()
        r1, r2 = random.Random(seed), random.Random(seed)
        assert truncate_pair(a, b, limit, r1) == _reference_truncate(a, b, limit, r2)
        assert r1.random() == r2.random(), "the same number of rng calls"


def test_pairs_are_well_formed():
    rng = random.Random(1)
    docs = [[rng.randint(1, 30) for _ in range(rng.randint(1, 15))] for _ in range(20)]
    index = _index(docs)
    for d in range(len(docs)):
        lo, hi = _doc_span(index, d)
        for pair in document_pairs(index, d, 64, 0.1, random.Random(d)):
            la, lb = pair.a_end - pair.a_start, pair.b_end - pair.b_start
            assert la >= 1 and lb >= 1 and la + lb <= 61
            assert lo <= pair.a_start < pair.a_end <= hi, "A comes from the document"
            if pair.is_random_next:
                assert not lo <= pair.b_start < hi, "a random B comes from another document"
            else:
                assert lo <= pair.b_start and pair.b_end <= hi


def test_one_segment_documents_get_a_random_b():
    index = _index([[5], [7, 8], [4]])
    for seed in range(20):
        pairs = list(document_pairs(index, 0, 128, 0.0, random.Random(seed)))
        assert len(pairs) == 1 and pairs[0].is_random_next


def test_every_segment_is_used_once_and_unused_segments_are_put_back():
    """Without truncation, A and the real-next Bs of one pass tile the document in order."""
    rng = random.Random(2)
    docs = [[rng.randint(1, 20) for _ in range(rng.randint(1, 30))] for _ in range(10)]
    index = _index(docs)
    random_next = 0
    for d in range(len(docs)):
        lo, hi = _doc_span(index, d)
        covered = lo
        for pair in document_pairs(index, d, 10_000, 0.5, random.Random(100 + d)):
            assert pair.a_start == covered
            covered = pair.a_end if pair.is_random_next else pair.b_end
            random_next += pair.is_random_next
        assert covered == hi
    assert random_next > 0


def test_rows_are_cls_a_sep_b_sep():
    tokens = np.arange(100, 200)
    pairs = [Pair(0, 3, 10, 12, False), Pair(50, 51, 20, 25, True)]
    ids, lengths, a_lengths = build_rows(tokens, pairs, 12, cls_id=2, sep_id=3)
    assert ids.tolist() == [[2, 100, 101, 102, 3, 110, 111, 3, 0, 0, 0, 0],
                            [2, 150, 3, 120, 121, 122, 123, 124, 3, 0, 0, 0]]
    assert lengths.tolist() == [8, 9] and a_lengths.tolist() == [5, 3]
    zeros = np.zeros((2, 2), np.int64)
    features = Instances(ids, lengths, a_lengths, np.array([0, 1]), np.zeros(2, np.int64), zeros, zeros).features()
    assert features["token_type_ids"].tolist() == [[0] * 5 + [1] * 3 + [0] * 4, [0] * 3 + [1] * 6 + [0] * 3]
    assert features["attention_mask"].sum(1).tolist() == [8, 9]


def test_short_targets_make_shorter_pairs():
    index = _index([[10] * 40, [10] * 40])
    full = [p.b_end - p.b_start + p.a_end - p.a_start for p in document_pairs(index, 0, 128, 0.0, random.Random(0))]
    short = [p.b_end - p.b_start + p.a_end - p.a_start for p in document_pairs(index, 0, 128, 1.0, random.Random(0))]
    assert np.mean(short) < np.mean(full)
