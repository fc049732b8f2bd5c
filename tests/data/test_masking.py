"""Masked-LM masking: Google's rules, vectorized (mask_batch) and exact-stream (google_mask)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pretrain_fixtures import VOCAB, random_rows, vocab_dict

from bertkit.data.masking import (
    MaskRule,
    VocabTables,
    candidates,
    derive_key,
    derive_keys,
    google_mask,
    mask_batch,
    num_to_predict,
    word_starts,
)
from bertkit.errors import BertkitError

TABLES = VocabTables.from_vocab(vocab_dict())
MASK, CLS, SEP = 4, 2, 3


def _mask(rows: int = 3000, width: int = 40, whole_word: bool = False, seed: int = 0):
    ids, lengths, a_lengths = random_rows(np.random.default_rng(seed), rows, width)
    rule = MaskRule(8, 0.15, whole_word)
    keys = derive_keys(seed, np.arange(rows))
    return ids, lengths, a_lengths, rule, mask_batch(ids, lengths, a_lengths, keys, rule, TABLES)


def test_num_to_predict_is_googles_rounding():
    rule = MaskRule(20, 0.15, False)
    lengths = np.arange(1, 600)
    expected = [min(20, max(1, round(n * 0.15))) for n in lengths]  # Python's round: half to even
    assert num_to_predict(lengths, rule).tolist() == expected
    assert num_to_predict(30, rule).tolist() == 4  # 4.5 rounds to 4, as in Python


def test_never_masks_cls_or_sep_and_counts_are_exact():
    ids, lengths, a_lengths, rule, m = _mask()
    assert (m.counts == num_to_predict(lengths, rule)).all()
    for row in range(len(ids)):
        pos = m.positions[row, :m.counts[row]]
        assert (np.diff(pos) > 0).all(), "positions ascend"
        assert not set(pos.tolist()) & {0, a_lengths[row] - 1, lengths[row] - 1}
        assert (pos < lengths[row]).all()
        assert (m.labels[row, :m.counts[row]] == ids[row, pos]).all()
        assert (m.positions[row, m.counts[row]:] == 0).all() and (m.labels[row, m.counts[row]:] == 0).all()
        untouched = np.setdiff1d(np.arange(ids.shape[1]), pos)
        assert (m.input_ids[row, untouched] == ids[row, untouched]).all()


def test_replacement_is_80_10_10_over_the_whole_vocabulary():
    m = _mask(rows=20000)[-1]
    slot = np.arange(m.positions.shape[1])[None, :] < m.counts[:, None]
    rows = np.nonzero(slot)[0]
    now, label = m.input_ids[rows, m.positions[slot]], m.labels[slot]
    n = len(now)
    is_mask = now == MASK
    random_draws = now[~is_mask & (now != label)]
    assert abs(is_mask.mean() - 0.8) < 0.01
    # a random draw hits the label 1 time in len(VOCAB): those count as kept
    kept = (now == label).mean() - 0.1 / len(VOCAB)
    assert abs(kept - 0.1) < 0.01 and abs(len(random_draws) / n - 0.1 * (1 - 1 / len(VOCAB))) < 0.01
    drawn = np.bincount(random_draws, minlength=len(VOCAB))
    assert (drawn[[i for i in range(len(VOCAB)) if i != MASK]] > 0).all(), "specials included, as in Google"


def test_whole_word_masking_keeps_words_whole():
    ids, lengths, a_lengths, rule, m = _mask(whole_word=True)
    cand = candidates(lengths, a_lengths, ids.shape[1])
    starts = word_starts(ids, cand, TABLES.continuation)
    assert (m.counts <= num_to_predict(lengths, rule)).all()
    assert (m.counts == num_to_predict(lengths, rule)).mean() > 0.9
    masked = np.zeros(ids.shape, dtype=bool)
    for row in range(len(ids)):
        masked[row, m.positions[row, :m.counts[row]]] = True
    for row in range(len(ids)):
        word = np.cumsum(starts[row])[cand[row]]
        hit = masked[row][cand[row]]
        for w in np.unique(word[hit]):
            assert hit[word == w].all(), f"row {row}: word {w} only partly masked"


def test_continuation_after_the_middle_sep_joins_the_last_word_of_a():
    """Google's grouping skips [CLS]/[SEP], so a ## piece that opens B belongs to A's last word."""
    ids = np.array([[CLS, 5, 6, SEP, 13, 7, SEP]])  # [CLS] ka lo [SEP] ##ka mi [SEP]; 13 = ##ka
    cand = candidates(np.array([7]), np.array([4]), 7)
    assert word_starts(ids, cand, TABLES.continuation).tolist() == [[False, True, True, False, False, True, False]]
    rng = random.Random(3)
    for _ in range(200):
        _, picked, _ = google_mask(ids[0].tolist(), 4, MaskRule(2, 0.3, True), TABLES, rng)
        assert (2 in picked) == (4 in picked)


def test_a_row_mask_depends_on_its_key_only():
    ids, lengths, a_lengths = random_rows(np.random.default_rng(1), 64, 30)
    rule, keys = MaskRule(6, 0.2, True), derive_keys(7, np.arange(64))
    whole = mask_batch(ids, lengths, a_lengths, keys, rule, TABLES)
    order = np.random.default_rng(2).permutation(64)[:20]
    part = mask_batch(ids[order], lengths[order], a_lengths[order], keys[order], rule, TABLES)
    assert (part.input_ids == whole.input_ids[order]).all() and (part.positions == whole.positions[order]).all()
    other = mask_batch(ids, lengths, a_lengths, keys + np.uint64(1), rule, TABLES)
    assert (other.positions != whole.positions).any()


def test_google_mask_follows_the_same_rules():
    """The exact-stream reference: same counts for per-piece masking, words whole with whole-word."""
    ids, lengths, a_lengths = random_rows(np.random.default_rng(4), 500, 30)
    rng = random.Random(5)
    for whole_word in (False, True):
        rule = MaskRule(6, 0.15, whole_word)
        for row in range(len(ids)):
            tokens = ids[row, :lengths[row]].tolist()
            out, picked, labels = google_mask(tokens, int(a_lengths[row]), rule, TABLES, rng)
            assert picked == sorted(picked) and labels == [tokens[i] for i in picked]
            assert not set(picked) & {0, a_lengths[row] - 1, lengths[row] - 1}
            if not whole_word:
                assert len(picked) == num_to_predict(lengths[row], rule)
            assert all(out[i] == tokens[i] for i in range(len(tokens)) if i not in picked)


def test_derive_keys_agrees_with_derive_key():
    parts = (12345, 1, np.array([0, 3, 9]), np.array([7, 7, 2**40]), 5)
    expected = [derive_key(12345, 1, r, d, 5) for r, d in zip([0, 3, 9], [7, 7, 2**40])]
    assert derive_keys(*parts).tolist() == expected


def test_bad_rules_and_vocabularies_are_clear_errors():
    with pytest.raises(BertkitError, match="max_predictions_per_seq"):
        MaskRule(0, 0.15, False)
    with pytest.raises(BertkitError, match="masked_lm_prob"):
        MaskRule(20, 0.0, False)
    with pytest.raises(BertkitError, match=r"lacks \[MASK\]"):
        VocabTables.from_vocab({t: i for i, t in enumerate(VOCAB) if t != "[MASK]"})
