"""Masked-LM masking: Google's rule, vectorized over a batch with counter-based randomness.

Google's ``create_masked_lm_predictions``, for one instance ``[CLS] A [SEP] B [SEP]``:

* candidates are every position but [CLS] and the two [SEP]s; with whole-word masking a ``##``
  piece joins the candidate before it (so a ``##`` piece that opens B joins A's last word, as in
  Google's code, which skips the [SEP] between them);
* the candidates are shuffled; ``num_to_predict = min(max_predictions, max(1, round(len * prob)))``
  with ``len`` counting [CLS] and [SEP]s and Python's round-half-to-even;
* walking the shuffled candidates, stop once ``num_to_predict`` pieces are masked and skip a word
  whose pieces would overflow it;
* each masked piece becomes [MASK] (80%), stays itself (10%) or becomes an entry drawn uniformly
  from the whole vocabulary in file order (10%), [PAD], [CLS] and [unusedN] included;
* the positions are reported in ascending order with their original ids as labels.

``mask_batch`` does exactly that for many rows at once. Its randomness is counter-based: each row
has a 64-bit key and every random number of the row is ``splitmix64(key + (counter + 1) * golden)``
(order of candidate words: counter = position; 80/10/10 draw: L + position; random word: 2L +
position), so a row's mask depends on its key and tokens only, never on the batch, the worker or
the order of work. Shuffling the words is drawing a uniform sort key per word, which gives the same
distribution as Google's shuffle. ``google_mask`` is the reference path: Google's exact sequence of
``random.Random`` calls, used by ``--google-rng``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bertkit.errors import BertkitError

__all__ = ["MaskRule", "Masked", "VocabTables", "candidates", "derive_key", "derive_keys", "google_mask", "mask_batch",
           "num_to_predict", "word_starts"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


@dataclass(frozen=True)
class MaskRule:
    """How to mask: Google's flags."""

    max_predictions: int  # max_predictions_per_seq: masked slots per instance (P)
    masked_lm_prob: float  # share of the tokens to mask (before the cap)
    whole_word: bool  # mask all pieces of a word together (do_whole_word_mask)

    def __post_init__(self) -> None:
        if not isinstance(self.max_predictions, int) or self.max_predictions < 1:
            raise BertkitError(f"max_predictions_per_seq must be an integer >= 1, not {self.max_predictions!r}")
        if not 0.0 < self.masked_lm_prob <= 1.0:
            raise BertkitError(f"masked_lm_prob must be in (0, 1], not {self.masked_lm_prob!r}")


@dataclass(frozen=True)
class VocabTables:
    """What masking needs from a vocabulary, as arrays indexed by token id."""

    size: int  # largest id + 1
    cls_id: int
    sep_id: int
    pad_id: int
    mask_id: int
    continuation: np.ndarray  # bool (size,): the token starts with "##"
    random_ids: np.ndarray  # int64 (K,): the ids in vocabulary file order, drawn from for random words

    @classmethod
    def from_vocab(cls, vocab: Mapping[str, int], source: str = "<vocab>") -> VocabTables:
        """Tables of a token -> id mapping (a vocab.txt as ``load_vocab`` reads it, file order kept)."""
        missing = [t for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]") if t not in vocab]
        if missing:
            raise BertkitError(f"{source}: vocabulary lacks {', '.join(missing)}, which pretraining data needs")
        size = max(vocab.values()) + 1
        continuation = np.zeros(size, dtype=bool)
        continuation[[i for t, i in vocab.items() if t.startswith("##")]] = True
        return cls(size, vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"], vocab["[MASK]"], continuation,
                   np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab)))


def num_to_predict(length: int | np.ndarray, rule: MaskRule) -> np.ndarray:
    """Google's min(max_predictions, max(1, round(length * prob))) with round-half-to-even; (B,)."""
    wanted = np.rint(np.asarray(length, dtype=np.float64) * rule.masked_lm_prob).astype(np.int64)
    return np.minimum(rule.max_predictions, np.maximum(1, wanted))


# ----------------------------------------------------------------------------- counter-based randomness


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def _mix_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def derive_key(*parts: int) -> int:
    """A 64-bit key from integers (seed, purpose, round, ...): splitmix64 chained over the parts."""
    key = 0
    for part in parts:
        key = _mix_int((key + (part & _MASK64) + _GOLDEN) & _MASK64)
    return key


def derive_keys(*parts: int | np.ndarray) -> np.ndarray:
    """``derive_key`` elementwise over integer arrays (broadcast together); uint64, at least 1-D."""
    arrays = [_as_uint64(p) for p in parts]
    key = np.zeros(np.broadcast_shapes(*(a.shape for a in arrays)), dtype=np.uint64)
    for part in arrays:
        key = _mix(key + part + np.uint64(_GOLDEN))
    return key


def _as_uint64(part: int | np.ndarray) -> np.ndarray:
    """Integers as uint64 (two's complement for negatives), at least 1-D."""
    if isinstance(part, (int, np.integer)):
        return np.array([int(part) & _MASK64], dtype=np.uint64)
    part = np.atleast_1d(np.asarray(part))
    return part if part.dtype == np.uint64 else part.astype(np.int64).view(np.uint64)


def _uniform(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) for each (key, counter) pair, broadcast; 53 random bits each."""
    state = keys.astype(np.uint64) + (counters.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN)
    return (_mix(state) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# ----------------------------------------------------------------------------- vectorized masking


@dataclass
class Masked:
    """A masked batch: B rows of width L, P prediction slots."""

    input_ids: np.ndarray  # int64 (B, L): masked ids, padding as given
    counts: np.ndarray  # int64 (B,): masked slots used
    positions: np.ndarray  # int64 (B, P): masked positions ascending, then 0
    labels: np.ndarray  # int64 (B, P): original ids there, then 0


def candidates(lengths: np.ndarray, a_lengths: np.ndarray, width: int) -> np.ndarray:
    """bool (B, width): positions that may be masked, the real tokens but [CLS] and the two [SEP]s."""
    col = np.arange(width)[None, :]
    return (col >= 1) & (col < lengths[:, None] - 1) & (col != a_lengths[:, None] - 1)


def word_starts(ids: np.ndarray, cand: np.ndarray, continuation: np.ndarray) -> np.ndarray:
    """bool (B, L): candidate positions that open a word; a ## piece joins the candidate before it,
    and a row's first candidate opens a word whatever it is (Google's grouping)."""
    rows = np.arange(len(ids))
    first = np.argmax(cand, axis=1)
    start = cand & ~continuation[np.clip(ids, 0, len(continuation) - 1)]
    start[rows, first] |= cand[rows, first]
    return start


def _word_sizes(start: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each word-opening position, its word's piece count (0 elsewhere), int64 (B, L); and for
    each position, where its word opens (the last opener at or before it), int64 (B, L)."""
    rows, width = start.shape
    col = np.arange(width)[None, :]
    opener = np.maximum.accumulate(np.where(start, col, 0), axis=1)  # (B, L)
    flat = (np.arange(rows)[:, None] * width + opener)[cand]
    sizes = np.bincount(flat, minlength=rows * width).reshape(rows, width)
    return np.where(start, sizes, 0), opener


def _choose_words(start: np.ndarray, sizes: np.ndarray, keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """bool (B, L) at word-opening positions: the words to mask, Google's walk in a random order.

    Each word's place in the order is a uniform draw at its opening position. Walking the words in
    that order, a word is taken when all its pieces still fit in ``wanted``; once a row is full
    nothing more fits, which is Google's ``break``.
    """
    rows, width = start.shape
    sort_key = np.where(start, _uniform(keys[:, None], np.arange(width)[None, :]), np.inf)
    order = np.argsort(sort_key, axis=1)  # (B, L): word openers first, in random order
    sorted_sizes = np.take_along_axis(sizes, order, axis=1)
    taken_sorted = np.zeros(start.shape, dtype=bool)
    count = np.zeros(rows, dtype=np.int64)
    for rank in range(width):
        size = sorted_sizes[:, rank]
        fits = (size > 0) & (count + size <= wanted)
        taken_sorted[:, rank] = fits
        count += size * fits
        if (count >= wanted).all() or not size.any():
            break
    taken = np.zeros_like(taken_sorted)
    np.put_along_axis(taken, order, taken_sorted, axis=1)
    return taken


def _replace(ids: np.ndarray, r: np.ndarray, c: np.ndarray, keys: np.ndarray, tables: VocabTables) -> np.ndarray:
    """The masked ids: at each chosen position (r, c) [MASK] 80%, itself 10%, a random vocabulary entry 10%."""
    out = ids.copy()
    width = ids.shape[1]
    draw = _uniform(keys[r], c + width)
    pick = (_uniform(keys[r], c + 2 * width) * len(tables.random_ids)).astype(np.int64)
    out[r, c] = np.where(draw < 0.8, tables.mask_id, np.where(draw < 0.9, ids[r, c], tables.random_ids[pick]))
    return out


def mask_batch(ids: np.ndarray, lengths: np.ndarray, a_lengths: np.ndarray, keys: np.ndarray,
               rule: MaskRule, tables: VocabTables) -> Masked:
    """Mask B unmasked rows as Google does, each row's randomness from its key alone.

    ids: int (B, L) ``[CLS] A [SEP] B [SEP]`` then padding; lengths: (B,) real tokens;
    a_lengths: (B,) length of ``[CLS] A [SEP]``; keys: uint64 (B,) one random key per row.
    """
    ids = np.asarray(ids, dtype=np.int64)
    lengths, a_lengths = np.asarray(lengths, dtype=np.int64), np.asarray(a_lengths, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.uint64)
    cand = candidates(lengths, a_lengths, ids.shape[1])
    start = word_starts(ids, cand, tables.continuation) if rule.whole_word else cand
    sizes, opener = _word_sizes(start, cand)
    taken = _choose_words(start, sizes, keys, num_to_predict(lengths, rule))
    chosen = cand & np.take_along_axis(taken, opener, axis=1)
    counts = chosen.sum(axis=1)
    r, c = np.nonzero(chosen)  # row-major: positions ascending within a row
    slot = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.zeros((len(ids), rule.max_predictions), dtype=np.int64)  # (B, P)
    positions[r, slot] = c
    labels = np.zeros_like(positions)
    labels[r, slot] = ids[r, c]
    return Masked(_replace(ids, r, c, keys, tables), counts, positions, labels)


# ----------------------------------------------------------------------------- Google's exact calls


def google_mask(tokens: list[int], a_length: int, rule: MaskRule, tables: VocabTables,
                rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """Google's create_masked_lm_predictions on ids, making the same ``rng`` calls in the same order.

    tokens: ``[CLS] A [SEP] B [SEP]`` ids; a_length: length of ``[CLS] A [SEP]``.
    Returns (masked ids, masked positions ascending, original ids there).
    """
    special = {0, a_length - 1, len(tokens) - 1}
    words: list[list[int]] = []
    for i, token in enumerate(tokens):
        if i in special:
            continue
        if rule.whole_word and words and tables.continuation[token]:
            words[-1].append(i)
        else:
            words.append([i])
    rng.shuffle(words)
    wanted = min(rule.max_predictions, max(1, round(len(tokens) * rule.masked_lm_prob)))
    out, picked = list(tokens), []
    for word in words:
        if len(picked) >= wanted:
            break
        if len(picked) + len(word) > wanted:
            continue
        for i in word:
            if rng.random() < 0.8:
                out[i] = tables.mask_id
            elif rng.random() >= 0.5:
                out[i] = int(tables.random_ids[rng.randint(0, len(tables.random_ids) - 1)])
            picked.append(i)
    picked.sort()
    return out, picked, [tokens[i] for i in picked]
