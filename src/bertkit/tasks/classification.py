"""Sentence (pair) classification and regression data: examples, label ids, encodings, test_results.tsv.

The readers (``bertkit.tasks.glue`` for GLUE, ``bertkit.tasks.custom`` for CSV/TSV/JSONL) return
``Example`` lists; this module turns them into model inputs and writes Google's prediction file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bertkit.errors import BertkitError
from bertkit.io import atomic_open
from bertkit.tokenizer import BertTokenizer, Encoding

Label = str | float | None


@dataclass(frozen=True)
class Example:
    """One text or text pair; label is a class name (str), a float (regression) or None (test)."""

    guid: str  # "<split>-<row>" as Google writes it; for test files the file's index column
    text_a: str
    text_b: str | None = None
    label: Label = None
    where: str = ""  # "FILE:LINE" it came from, for error messages


@dataclass
class ClassificationData:
    """Encoded examples: `encodings` for ``BertTokenizer.pad``; labels (N,) int64 class ids or
    float32 targets, or None for unlabelled (test) data."""

    examples: list[Example]
    encodings: list[Encoding]
    labels: np.ndarray | None


def is_number(text: str) -> bool:
    """True for a finite decimal number ("3", "-0.5", "5.000")."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def infer_label_list(examples: Sequence[Example]) -> list[str] | None:
    """The label set of training examples: None (regression) when every label is a number and at
    least one is written with a decimal point or exponent (STS-B's "5.000") or is a JSON float;
    otherwise the sorted distinct labels (so integer labels such as "0"/"1" are classes)."""
    labels = [e.label for e in examples]
    if not labels:
        raise BertkitError("no training examples to take the label set from")
    if any(x is None for x in labels):
        bad = next(e for e in examples if e.label is None)
        raise BertkitError(f"{bad.where or bad.guid}: training example without a label")
    numbers = all(isinstance(x, float) or (isinstance(x, str) and is_number(x)) for x in labels)
    if numbers and any(isinstance(x, float) or not x.strip().lstrip("+-").isdigit() for x in labels):
        return None
    return sorted({str(x) for x in labels})


def label_ids(examples: Sequence[Example], label_list: Sequence[str] | None, split: str) -> np.ndarray:
    """Class ids (int64) by position in label_list, or float32 targets when label_list is None.

    A label not in label_list (a dev label never seen in training) raises BertkitError naming
    the example's file and line and the known labels.
    """
    if label_list is None:
        return np.array([_float_label(e, split) for e in examples], dtype=np.float32)
    index = {label: i for i, label in enumerate(label_list)}
    out = np.empty(len(examples), dtype=np.int64)
    for n, e in enumerate(examples):
        key = None if e.label is None else str(e.label)
        if key not in index:
            raise BertkitError(f"{e.where or e.guid}: {split} label {e.label!r} is not one of the "
                               f"training labels {list(label_list)}")
        out[n] = index[key]
    return out


def _float_label(e: Example, split: str) -> float:
    try:
        return float(e.label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BertkitError(f"{e.where or e.guid}: {split} label {e.label!r} is not a number "
                           "(this is a regression task)") from None


def encode_examples(tokenizer: BertTokenizer, examples: Sequence[Example], max_seq_length: int,
                    label_list: Sequence[str] | None, split: str, labelled: bool = True) -> ClassificationData:
    """Tokenize [CLS] A [SEP] (B [SEP]) with Google's truncation to max_seq_length, and map labels
    (labelled=False for test data: labels None)."""
    pairs = [(e.text_a, e.text_b) for e in examples]
    encodings = tokenizer.encode_batch(pairs, max_length=max_seq_length) if pairs else []
    labels = label_ids(examples, label_list, split) if labelled else None
    return ClassificationData(list(examples), encodings, labels)


def collate(tokenizer: BertTokenizer, data: ClassificationData, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """A batch of data's examples at `indices`: input_ids, token_type_ids, attention_mask (B, T) padded
    to the longest, and labels (B,) (int64 class ids or float32 targets) when data is labelled."""
    batch = tokenizer.pad([data.encodings[i] for i in indices])
    if data.labels is not None:
        batch["labels"] = torch.from_numpy(data.labels[np.asarray(indices, dtype=np.int64)])
    return batch


def check_head_labels(head: Sequence[str] | int, label_list: Sequence[str] | None, model: str) -> None:
    """Refuse a model whose classification head does not fit the data: `head` is the label names
    saved with a fine-tuned model, or just its number of outputs; label_list None is regression
    (one output). Never reshape a head silently."""
    if isinstance(head, int):
        expected = 1 if label_list is None else len(label_list)
        if head != expected:
            raise BertkitError(f"{model}: its head has {head} outputs, the data needs {expected} "
                               f"({'regression' if label_list is None else list(label_list)})")
    elif label_list is None or list(head) != list(label_list):
        raise BertkitError(f"{model}: its head predicts {list(head)}, the data has "
                           f"{'a regression target' if label_list is None else list(label_list)}")


def write_test_results(path: str | Path, probabilities: np.ndarray) -> Path:
    """Google's run_classifier test_results.tsv: one line per example, the class probabilities
    (N, C) tab-separated (for regression (N,) or (N, 1): the predicted value)."""
    values = np.asarray(probabilities, dtype=np.float64)
    values = values.reshape(len(values), -1)  # (N, C)
    with atomic_open(path) as f:
        for row in values:
            f.write("\t".join(repr(float(v)) for v in row) + "\n")
    return Path(path)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)

