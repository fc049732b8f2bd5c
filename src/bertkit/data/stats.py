"""Statistics of pretraining data, computed as in Google's golden stats.json so they compare directly.

For a bertkit data directory or Google TFRecord files (anything ``PretrainingDataset`` opens):

* instances; real length (sum of attention_mask, [CLS] and [SEP]s included): min, max, mean,
  median, share at and below max_seq_length, histogram in bins of 8 and exact;
* mean tokens of A and of B ([CLS]/[SEP] excluded); share and count of random-next instances;
* masked slots per instance (total, mean, min, max, share at max_predictions, share equal to
  Google's num_to_predict for masked_lm_prob); each slot classified by comparing input_ids at the
  position with the label: [MASK] -> mask, the label itself -> kept, anything else -> random;
* with a vocabulary: the share of masked labels that are ## pieces, and the words (rebuilt from the
  original tokens, a ## piece joining the piece before it, [CLS]/[SEP] skipped) that have a masked
  piece, and the share of those masked entirely.

A dataset with dynamic masking is measured with the masks of one epoch (0 unless told).
Everything is accumulated batch by batch (histograms and sums), so memory does not grow with N.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.data.dataset import PretrainingDataset
from bertkit.data.masking import MaskRule, candidates, num_to_predict, word_starts
from bertkit.tokenizer import load_vocab

__all__ = ["data_stats", "format_stats"]

_BATCH = 4096


@dataclass
class _Totals:
    """Sums and histograms over all batches."""

    width: int
    slots: int
    lengths: np.ndarray = field(init=False)  # count per real length 0..L
    masked: np.ndarray = field(init=False)  # count per masked-slot count 0..P
    a_tokens: int = 0
    b_tokens: int = 0
    random_next: int = 0
    equal_to_rule: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: {"mask": 0, "kept": 0, "random": 0})
    continuations: int = 0
    masked_words: int = 0
    full_words: int = 0

    def __post_init__(self) -> None:
        self.lengths = np.zeros(self.width + 1, np.int64)
        self.masked = np.zeros(self.slots + 1, np.int64)


def _add(t: _Totals, b: dict[str, np.ndarray], mask_id: int, rule: MaskRule | None,
         continuation: np.ndarray | None) -> None:
    real = b["attention_mask"].astype(bool)
    lengths = real.sum(1)
    counts = (b["masked_lm_weights"] > 0).sum(1)
    t.lengths += np.bincount(lengths, minlength=t.width + 1)
    t.masked += np.bincount(counts, minlength=t.slots + 1)
    a_lengths = (real & (b["token_type_ids"] == 0)).sum(1)
    t.a_tokens += int((a_lengths - 2).sum())
    t.b_tokens += int((lengths - a_lengths - 1).sum())
    t.random_next += int(b["next_sentence_labels"].reshape(-1).sum())
    if rule is not None:
        t.equal_to_rule += int((counts == num_to_predict(lengths, rule)).sum())
    slot = b["masked_lm_weights"] > 0
    rows = np.nonzero(slot)[0]
    at = b["input_ids"][rows, b["masked_lm_positions"][slot]]
    labels = b["masked_lm_ids"][slot]
    is_mask, is_kept = at == mask_id, (at == labels) & (at != mask_id)
    for kind, n in (("mask", is_mask.sum()), ("kept", is_kept.sum()), ("random", (~is_mask & ~is_kept).sum())):
        t.kinds[kind] += int(n)
    if continuation is not None:
        t.continuations += int(continuation[np.clip(labels, 0, len(continuation) - 1)].sum())
        _add_words(t, b, slot, lengths, a_lengths, continuation)


def _add_words(t: _Totals, b: dict[str, np.ndarray], slot: np.ndarray, lengths: np.ndarray,
               a_lengths: np.ndarray, continuation: np.ndarray) -> None:
    """Words with a masked piece, and those masked entirely, over the original tokens."""
    rows, positions = np.nonzero(slot)[0], b["masked_lm_positions"][slot]
    original = b["input_ids"].copy()
    original[rows, positions] = b["masked_lm_ids"][slot]
    masked = np.zeros(original.shape, dtype=bool)
    masked[rows, positions] = True
    cand = candidates(lengths, a_lengths, original.shape[1])
    word = np.cumsum(word_starts(original, cand, continuation).ravel()) - 1  # row-major: words never span rows
    in_word = cand.ravel()
    size = np.bincount(word[in_word])
    hit = np.bincount(word[in_word], weights=masked.ravel()[in_word], minlength=len(size))
    t.masked_words += int((hit > 0).sum())
    t.full_words += int(((hit > 0) & (hit == size)).sum())


def _length_stats(hist: np.ndarray, width: int) -> dict[str, Any]:
    n = int(hist.sum())
    values = np.arange(len(hist))
    present = np.flatnonzero(hist)
    cumulative = np.cumsum(hist)
    median = float(np.mean([np.searchsorted(cumulative, q) for q in ((n - 1) // 2 + 1, n // 2 + 1)]))
    bins = [{"range": f"{lo}-{min(lo + 7, width)}", "count": int(hist[lo:lo + 8].sum())} for lo in range(1, width + 1, 8)]
    return {
        "min": int(present[0]), "max": int(present[-1]), "mean": float((hist * values).sum() / n), "median": median,
        "fraction_at_max_seq_length": float(hist[width] / n), "fraction_below_max_seq_length": float((n - hist[width]) / n),
        "histogram_bins_of_8": bins, "histogram_exact": {str(v): int(hist[v]) for v in present},
    }


def _masked_stats(t: _Totals, n: int, rule: MaskRule | None, vocab_known: bool) -> dict[str, Any]:
    hist, total = t.masked, int((t.masked * np.arange(len(t.masked))).sum())
    present = np.flatnonzero(hist)
    slots = max(total, 1)
    out: dict[str, Any] = {
        "total": total, "mean_per_instance": total / n, "min_per_instance": int(present[0]),
        "max_per_instance": int(present[-1]), "fraction_instances_at_max_predictions": float(hist[t.slots] / n),
        "fraction_instances_equal_to_num_to_predict": t.equal_to_rule / n if rule is not None else None,
        "replaced_by_MASK_fraction": t.kinds["mask"] / slots, "kept_original_fraction": t.kinds["kept"] / slots,
        "replaced_by_random_token_fraction": t.kinds["random"] / slots, "counts": dict(t.kinds),
    }
    if vocab_known:
        out["fraction_of_masked_pieces_that_are_##_continuations"] = t.continuations / slots
        out["masked_words"] = t.masked_words
        out["fraction_of_masked_words_fully_masked"] = t.full_words / max(t.masked_words, 1)
    return out


def data_stats(path: str | Path, vocab: str | Path | None = None, masked_lm_prob: float | None = None,
               epoch: int = 0) -> dict[str, Any]:
    """Statistics of the data at ``path`` (see the module docstring) as one JSON-ready dict.

    vocab: a vocab.txt for the ## and word statistics (a bertkit directory has its own);
    masked_lm_prob: for the num_to_predict check (a bertkit directory records it).
    """
    dataset = PretrainingDataset(path)
    words = load_vocab(vocab) if vocab is not None else dataset.vocab
    params = (dataset.manifest or {}).get("parameters", {})
    prob = masked_lm_prob if masked_lm_prob is not None else params.get("masked_lm_prob")
    n = len(dataset)
    if n == 0:
        return {"path": str(path), "num_instances": 0}
    width, slots = dataset.max_seq_length, dataset.max_predictions
    rule = MaskRule(slots, prob, False) if prob is not None else None
    mask_id = _mask_id(dataset, words)
    continuation = _continuation(words)
    t = _Totals(width, slots)
    for batch in dataset.batches(_BATCH, epoch):
        _add(t, batch, mask_id, rule, continuation)
    return {
        "path": str(path), "format": (dataset.manifest or {}).get("format", "tfrecord (Google)"),
        "num_instances": n, "max_seq_length": width, "max_predictions_per_seq": slots, "mask_id": mask_id,
        "real_length": _length_stats(t.lengths, width),
        "segment_a_tokens_mean": t.a_tokens / n, "segment_b_tokens_mean": t.b_tokens / n,
        "is_random_next_fraction": t.random_next / n, "is_random_next_count": t.random_next,
        "masked_positions": _masked_stats(t, n, rule, continuation is not None),
    }


def _mask_id(dataset: PretrainingDataset, vocab: Mapping[str, int] | None) -> int:
    """[MASK]'s id: from the vocabulary, else the id most often found at masked positions."""
    if vocab is not None and "[MASK]" in vocab:
        return vocab["[MASK]"]
    b = dataset.get_batch(np.arange(min(len(dataset), _BATCH)))
    slot = b["masked_lm_weights"] > 0
    at = b["input_ids"][np.nonzero(slot)[0], b["masked_lm_positions"][slot]]
    return int(np.bincount(at).argmax()) if len(at) else -1


def _continuation(vocab: Mapping[str, int] | None) -> np.ndarray | None:
    if vocab is None:
        return None
    table = np.zeros(max(vocab.values()) + 1, dtype=bool)
    table[[i for token, i in vocab.items() if token.startswith("##")]] = True
    return table


def format_stats(stats: Mapping[str, Any]) -> str:
    """The statistics as a few readable lines."""
    n = stats["num_instances"]
    lines = [f"{stats['path']}: {n:,} instances ({stats.get('format', '')})"]
    if not n:
        return lines[0]
    rl, mp = stats["real_length"], stats["masked_positions"]
    lines += [
        (f"  real length: mean {rl['mean']:.1f}, median {rl['median']:g}, min {rl['min']}, max {rl['max']}, "
         f"at {stats['max_seq_length']}: {rl['fraction_at_max_seq_length']:.3f}"),
        (f"  segment tokens: A {stats['segment_a_tokens_mean']:.1f}, B {stats['segment_b_tokens_mean']:.1f}; "
         f"random next: {stats['is_random_next_fraction']:.3f}"),
        (f"  masked per instance: mean {mp['mean_per_instance']:.2f}, min {mp['min_per_instance']}, "
         f"max {mp['max_per_instance']}, at {stats['max_predictions_per_seq']}: "
         f"{mp['fraction_instances_at_max_predictions']:.3f}"),
        (f"  [MASK] / kept / random: {mp['replaced_by_MASK_fraction']:.3f} / {mp['kept_original_fraction']:.3f} / "
         f"{mp['replaced_by_random_token_fraction']:.3f}"),
    ]
    if "masked_words" in mp:
        lines.append(f"  ## pieces among masked: {mp['fraction_of_masked_pieces_that_are_##_continuations']:.3f}; "
                     f"words fully masked: {mp['fraction_of_masked_words_fully_masked']:.3f} of {mp['masked_words']:,}")
    lines.append("  length histogram (bins of 8): " + " ".join(
        f"{b['range']}:{b['count']}" for b in rl["histogram_bins_of_8"]))
    return "\n".join(lines)
