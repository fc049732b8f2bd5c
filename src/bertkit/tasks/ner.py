"""Named-entity recognition data: CoNLL files and CLUENER JSON, word-piece features, predictions
written back in the input's format, and entity-level scores with seqeval.

CoNLL: one token per line, the tag in the last column (CoNLL-2003: "token POS chunk NER",
space-separated; WNUT-17: "token<TAB>tag"); a line that is empty or only whitespace ends a
sentence; ``-DOCSTART-`` lines are kept for writing back but are not sentences. A file whose
lines have one column is unlabelled. CLUENER: one JSON object per line, ``{"text": ..., "label":
{type: {entity: [[start, end], ...]}}}`` with inclusive character spans; every character is a
word and spans become BIO tags.

Features label each word's first piece (the others get IGNORE = -100). Sentences longer than
max_seq_length - 2 pieces are split into consecutive windows of whole words (no overlap), so every
word is predicted; only a single word longer than a whole window is cut to its first pieces.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit.errors import BertkitError, file_error
from bertkit.io import atomic_open
from bertkit.tasks.files import iter_jsonl, read_lines
from bertkit.tokenizer import BertTokenizer, Encoding

IGNORE = -100  # label of the pieces that are not a word's first (cross-entropy's ignore_index)
FORMATS = ("conll", "cluener")
# File names tried per split: CoNLL-2003 (kamalkraj/BERT-NER, HF), WNUT-17 (official), CLUENER.
SPLIT_FILES = {
    "conll": {"train": ("train.txt", "wnut17train.conll", "train.conll"),
              "dev": ("dev.txt", "valid.txt", "emerging.dev.conll", "dev.conll"),
              "test": ("test.txt", "emerging.test.annotated", "test.conll")},
    "cluener": {"train": ("train.json",), "dev": ("dev.json",), "test": ("test.json",)},
}


@dataclass
class NerSentence:
    words: list[str]
    labels: list[str] | None  # None when the file has no tags
    lines: list[int] = field(default_factory=list)  # CoNLL: line number (1-based) of each word


@dataclass
class NerData:
    """A read file: its sentences, and what writing predictions back needs."""

    path: Path
    format: str  # "conll" or "cluener" (bertkit predict: "text", a sentence a line)
    sentences: list[NerSentence]
    raw_lines: list[str] = field(default_factory=list)  # CoNLL: every line, as read
    delimiter: str | None = None  # CoNLL: "\t" or None (whitespace)
    records: list[dict[str, Any]] = field(default_factory=list)  # CLUENER: each line's object
    overlapping_spans: int = 0  # CLUENER: spans dropped because they overlap an earlier one


def read_conll(path: str | Path) -> NerData:
    """Sentences of a CoNLL file; every token line must have the same number of columns."""
    path = Path(path)
    lines = read_lines(path)
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise file_error(path, "no tokens")
    delimiter = "\t" if "\t" in first.strip() else None
    width = len(first.split(delimiter))
    data = NerData(path, "conll", [], lines, delimiter)
    words: list[str] = []
    tags: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate([*lines, ""], start=1):
        fields = line.split(delimiter) if line.strip() else []
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                data.sentences.append(NerSentence(words, tags if width > 1 else None, numbers))
            words, tags, numbers = [], [], []
            continue
        if len(fields) != width:
            raise file_error(path, f"line {number}: expected {width} columns, found {len(fields)}")
        words.append(fields[0])
        tags.append(fields[-1])
        numbers.append(number)
    return data


def read_cluener(path: str | Path) -> NerData:
    """CLUENER JSON lines: characters as words, spans as BIO tags (an overlapping span is dropped
    and counted; a span whose text does not match raises BertkitError naming the line)."""
    path = Path(path)
    data = NerData(path, "cluener", [])
    for number, record in iter_jsonl(path):
        if not isinstance(record.get("text"), str):
            raise file_error(path, f"line {number}: expected an object with a 'text' string")
        data.records.append(record)
        words = list(record["text"])
        tags = _bio_tags(path, number, record, data) if "label" in record else None
        data.sentences.append(NerSentence(words, tags, [number] * len(words)))
    return data


def _bio_tags(path: Path, number: int, record: dict, data: NerData) -> list[str]:
    text, tags = record["text"], ["O"] * len(record["text"])
    if not isinstance(record["label"], dict):
        raise file_error(path, f"line {number}: 'label' must be an object {{type: {{entity: spans}}}}")
    for kind, entities in record["label"].items():
        for entity, spans in entities.items():
            for start, end in spans:
                if not (0 <= start <= end < len(text)) or text[start:end + 1] != entity:
                    raise file_error(path, f"line {number}: span {[start, end]} of {kind} {entity!r} "
                                           f"does not match the text")
                if any(t != "O" for t in tags[start:end + 1]):
                    data.overlapping_spans += 1
                    continue
                tags[start:end + 1] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start)
    return tags


def read_ner(path: str | Path, format: str = "conll") -> NerData:
    """Read a CoNLL file (format "conll") or a CLUENER JSON file ("cluener")."""
    if format not in FORMATS:
        raise BertkitError(f"unknown NER format {format!r}; use one of {', '.join(FORMATS)}")
    return read_conll(path) if format == "conll" else read_cluener(path)


def find_split_files(data_dir: str | Path, format: str = "conll") -> dict[str, Path]:
    """The train/dev/test files present in data_dir, by the usual names (SPLIT_FILES)."""
    if format not in FORMATS:
        raise BertkitError(f"unknown NER format {format!r}; use one of {', '.join(FORMATS)}")
    found = {}
    for split, names in SPLIT_FILES[format].items():
        path = next((Path(data_dir) / n for n in names if (Path(data_dir) / n).is_file()), None)
        if path is not None:
            found[split] = path
    if not found:
        raise file_error(data_dir, f"no {format} files here (looked for {SPLIT_FILES[format]})")
    return found


# ----------------------------------------------------------------------------- labels and features


def label_list(sentences: Sequence[NerSentence]) -> list[str]:
    """"O" then the other tags of (training) sentences, grouped by entity type: B-LOC, I-LOC, B-MISC..."""
    tags = {t for s in sentences for t in (s.labels or [])}
    if not tags:
        raise BertkitError("no tags in the training sentences")
    return ["O"] + sorted(tags - {"O"}, key=lambda t: (t[2:], t[:2]))


@dataclass
class NerFeature:
    """One window of a sentence: word_ids in encoding are word indices in the sentence."""

    sentence_index: int
    encoding: Encoding
    labels: list[int]  # a label id on each word's first piece, IGNORE elsewhere (all IGNORE unlabelled)


def create_features(tokenizer: BertTokenizer, data: NerData, labels: Sequence[str] | None,
                    max_seq_length: int = 128) -> list[NerFeature]:
    """Word-piece features of every sentence, long ones as consecutive windows of whole words.

    labels: the training label list (None: unlabelled features); a tag not in it raises
    BertkitError naming the file and line.
    """
    if max_seq_length < 3:
        raise BertkitError(f"max_seq_length must be at least 3, not {max_seq_length}")
    index = None if labels is None else {t: i for i, t in enumerate(labels)}
    encodings = tokenizer.encode_batch([s.words for s in data.sentences], max_length=sys.maxsize,
                                       is_split_into_words=True) if data.sentences else []
    features = []
    for n, (sentence, enc) in enumerate(zip(data.sentences, encodings)):
        ids = _label_ids(data, sentence, index)
        for window in _windows(enc.word_ids[1:-1], max_seq_length - 2):
            features.append(_feature(tokenizer, n, enc, window, ids))
    return features


def _label_ids(data: NerData, sentence: NerSentence, index: dict[str, int] | None) -> list[int] | None:
    if index is None or sentence.labels is None:
        return None
    for tag, line in zip(sentence.labels, sentence.lines):
        if tag not in index:
            raise file_error(data.path, f"line {line}: tag {tag!r} is not one of the training tags {list(index)}")
    return [index[t] for t in sentence.labels]


def _windows(word_ids: Sequence[int | None], budget: int) -> list[list[int]]:
    """Piece positions (into word_ids) of consecutive windows of whole words, at most budget each."""
    words: list[list[int]] = []
    for position, word in enumerate(word_ids):
        if position == 0 or word != word_ids[position - 1]:
            words.append([])
        words[-1].append(position)
    windows: list[list[int]] = [[]]
    for pieces in words:
        if windows[-1] and len(windows[-1]) + len(pieces) > budget:
            windows.append([])
        windows[-1] += pieces[:budget]
    return windows


def _feature(tokenizer: BertTokenizer, n: int, enc: Encoding, window: list[int], ids: list[int] | None) -> NerFeature:
    keep = [0, *(p + 1 for p in window), len(enc.ids) - 1]  # [CLS] window [SEP] in the full encoding
    sub = Encoding(*[[column[i] for i in keep] for column in
                     (enc.ids, enc.type_ids, enc.tokens, enc.offsets, enc.sequence_ids, enc.word_ids)])
    first = first_piece_mask(sub.word_ids)
    labels = [ids[w] if ids is not None and f else IGNORE for w, f in zip(sub.word_ids, first)]  # type: ignore[index]
    return NerFeature(n, sub, labels)


def collate(tokenizer: BertTokenizer, features: Sequence[NerFeature], return_tensors: str = "pt") -> dict[str, Any]:
    """A batch: input_ids, token_type_ids, attention_mask (B, T) padded to the longest, and labels
    (B, T) padded with IGNORE; torch tensors ("pt") or numpy arrays ("np")."""
    batch = tokenizer.pad([f.encoding for f in features], return_tensors="np")
    labels = np.full(batch["input_ids"].shape, IGNORE, dtype=np.int64)  # (B, T)
    for row, f in enumerate(features):
        labels[row, :len(f.labels)] = f.labels
    batch["labels"] = labels
    return {k: torch.from_numpy(v) for k, v in batch.items()} if return_tensors == "pt" else batch


def first_piece_mask(word_ids: Sequence[int | None]) -> list[bool]:
    """True at each word's first piece."""
    return [w is not None and (i == 0 or word_ids[i - 1] != w) for i, w in enumerate(word_ids)]


# ----------------------------------------------------------------------------- predictions


def predict_tags(data: NerData, features: Sequence[NerFeature], predictions: Sequence[Sequence[int]] | np.ndarray,
                 labels: Sequence[str]) -> list[list[str]]:
    """Tags per sentence from per-piece predictions (F, T) label ids (or (F, T, L) logits: argmax),
    read at each word's first piece. A word without pieces (a lone space in CLUENER text) continues
    the entity around it when both sides are I-/B- of one type, else is "O"."""
    rows = [np.asarray(p) for p in predictions]
    if len(rows) != len(features):
        raise BertkitError(f"{len(rows)} prediction rows for {len(features)} features")
    tags: list[list[str | None]] = [[None] * len(s.words) for s in data.sentences]
    for feature, row in zip(features, rows):
        ids = row.argmax(-1) if row.ndim == 2 else row
        for pos, (w, first) in enumerate(zip(feature.encoding.word_ids, first_piece_mask(feature.encoding.word_ids))):
            if first:
                tags[feature.sentence_index][w] = labels[int(ids[pos])]  # type: ignore[index]
    return [_fill_unpieced(t) for t in tags]


def _fill_unpieced(tags: list[str | None]) -> list[str]:
    out = []
    for i, tag in enumerate(tags):
        if tag is None:
            before = out[-1] if out else "O"
            after = next((t for t in tags[i + 1:] if t is not None), "O")
            tag = f"I-{before[2:]}" if before != "O" and after == f"I-{before[2:]}" else "O"
        out.append(tag)
    return out


def write_predictions(path: str | Path, data: NerData, tags: Sequence[Sequence[str]]) -> Path:
    """Write the input file back with predicted tags: CoNLL with the last column replaced (or a
    column added to an unlabelled file), every other line as it was; CLUENER with each object's
    "label" replaced by the predicted spans."""
    text = predictions_text(data, tags)
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def predictions_text(data: NerData, tags: Sequence[Sequence[str]]) -> str:
    """What write_predictions writes: the input file's text with the predicted tags."""
    if len(tags) != len(data.sentences):
        raise BertkitError(f"{len(tags)} tag sequences for {len(data.sentences)} sentences")
    if data.format not in FORMATS:
        raise BertkitError(f"cannot write {data.format!r} data back as CoNLL or CLUENER")
    return _conll_text(data, tags) if data.format == "conll" else _cluener_text(data, tags)


def _conll_text(data: NerData, tags: Sequence[Sequence[str]]) -> str:
    lines = list(data.raw_lines)
    join = data.delimiter or " "
    for sentence, predicted in zip(data.sentences, tags):
        for number, tag in zip(sentence.lines, predicted):
            fields = lines[number - 1].split(data.delimiter)
            fields = fields[:-1] if sentence.labels is not None else fields
            lines[number - 1] = join.join([*fields, tag])
    return "".join(line + "\n" for line in lines)


def _cluener_text(data: NerData, tags: Sequence[Sequence[str]]) -> str:
    out = []
    for record, predicted in zip(data.records, tags):
        out.append(json.dumps({**record, "label": bio_spans(record["text"], predicted)}, ensure_ascii=False))
    return "".join(line + "\n" for line in out)


def bio_spans(text: str, tags: Sequence[str]) -> dict[str, dict[str, list[list[int]]]]:
    """CLUENER's label object from per-character BIO tags: {type: {entity: [[start, end], ...]}}
    (an I- tag that does not continue its type starts an entity, as seqeval reads it)."""
    spans: dict[str, dict[str, list[list[int]]]] = {}
    start, kind = None, None
    for i, tag in enumerate([*tags, "O"]):
        continues = tag.startswith("I-") and tag[2:] == kind
        if start is not None and not continues:
            spans.setdefault(kind, {}).setdefault(text[start:i], []).append([start, i - 1])  # type: ignore[arg-type]
            start, kind = None, None
        if tag != "O" and not continues:
            start, kind = i, tag[2:]
    return spans


def ner_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level micro precision, recall, F1 (seqeval's default, conlleval's definition), token
    accuracy, and per type {precision, recall, f1, support}."""
    from seqeval.metrics import accuracy_score, classification_report

    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted)):
        raise BertkitError("gold and predicted tags differ in number of sentences or words")
    report = classification_report([list(g) for g in gold], [list(p) for p in predicted], output_dict=True,
                                   zero_division=0)
    micro = report.pop("micro avg")
    per_type = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                    "f1": float(v["f1-score"]), "support": int(v["support"])}
                for k, v in report.items() if not k.endswith(" avg")}
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]), "accuracy": float(accuracy_score(gold, predicted)),
            "per_type": per_type}
