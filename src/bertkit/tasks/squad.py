"""SQuAD v1.1 / v2.0: reading the JSON, features from tokenizer offsets, and a split by article.

Features follow Google's run_squad.py windows ([CLS] question [SEP] context window [SEP], the
question cut to max_query_length pieces, windows of the context every doc_stride pieces, each
piece's "max context" window), but answers are placed with the tokenizer's character offsets
instead of whitespace words and ``_improve_answer_span``: the answer's first and last pieces are
those whose character spans overlap the answer, so a predicted span maps back to the exact text
of the context (``bertkit.tasks.squad_predict``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit.errors import BertkitError, file_error
from bertkit.tokenizer import BertTokenizer, Encoding

UNLIMITED = sys.maxsize  # max_length for encodings that must not be truncated


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset in the context


@dataclass
class SquadExample:
    """One question with its context; answers are the gold answers whose offsets match the context."""

    qas_id: str
    question: str
    context: str
    answers: list[Answer]
    is_impossible: bool = False
    title: str = ""


@dataclass
class SquadData:
    """What read_squad found: the examples and what it had to leave out."""

    examples: list[SquadExample]
    version_2: bool
    bad_answers: int = 0  # answers whose text is not at answer_start in the context (dropped)
    skipped: int = 0  # training: answerable questions left without a usable answer (left out)
    empty_contexts: int = 0  # questions whose context is empty or blank


def load_json(path: str | Path) -> dict[str, Any]:
    """A SQuAD-style JSON file as a dict; unreadable or malformed files raise BertkitError."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise file_error(path, f"cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise file_error(path, f"not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise file_error(path, "not a SQuAD file: expected an object with a 'data' list")
    return data


def read_squad(source: str | Path | Mapping[str, Any], training: bool = False) -> SquadData:
    """Examples of a SQuAD file (or its loaded JSON).

    Answers whose text is not found at their answer_start are dropped and counted, as Google's
    reader drops them ("Could not find answer"); in training (which uses the first answer, as
    Google does) an answerable question left without its first answer is skipped and counted,
    and so is a question with an empty context. v2.0's is_impossible is read when present.
    """
    data = load_json(source) if isinstance(source, (str, Path)) else source
    where = str(source) if isinstance(source, (str, Path)) else "<squad json>"
    out = SquadData([], version_2=str(data.get("version", "")).startswith("v2"))
    try:
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    _add_question(out, qa, paragraph["context"], article.get("title", ""), training)
    except (KeyError, TypeError) as e:
        raise file_error(where, f"not a SQuAD file: missing or malformed field {e}") from None
    return out


def _add_question(out: SquadData, qa: dict, context: str, title: str, training: bool) -> None:
    impossible = bool(qa.get("is_impossible", False))
    out.version_2 = out.version_2 or "is_impossible" in qa
    answers = [Answer(a["text"], int(a["answer_start"])) for a in qa.get("answers", [])]
    good = [a for a in answers if a.text and context[a.start:a.start + len(a.text)] == a.text]
    out.bad_answers += len(answers) - len(good)
    if not context.strip():
        out.empty_contexts += 1
        if training:
            return
    if training and not impossible and (not answers or answers[0] not in good):
        out.skipped += 1
        return
    out.examples.append(SquadExample(str(qa["id"]), qa["question"], context, good, impossible, title))


# ----------------------------------------------------------------------------- features


@dataclass
class SquadFeature:
    """One window of one example: [CLS] question [SEP] context[window] [SEP].

    encoding.sequence_ids is 1 and encoding.offsets are character spans in the context for the
    context pieces; max_context[i] says piece i has its largest context in this window.
    start/end_position: the answer's first and last piece, 0 ([CLS]) for an impossible question
    or an answer not inside this window; None when made for prediction.
    """

    example_index: int
    window_index: int
    encoding: Encoding
    max_context: list[bool]
    start_position: int | None = None
    end_position: int | None = None

    @property
    def context_start(self) -> int:
        """Index of the first context piece."""
        return self.encoding.sequence_ids.index(1) if 1 in self.encoding.sequence_ids else len(self.encoding.ids) - 1


@dataclass(frozen=True)
class SquadConfig:
    max_seq_length: int = 384  # pieces per feature, specials included
    doc_stride: int = 128  # pieces between window starts
    max_query_length: int = 64  # longer questions keep their first max_query_length pieces

    def __post_init__(self) -> None:
        if self.max_seq_length <= self.max_query_length + 3:
            raise BertkitError(f"max_seq_length ({self.max_seq_length}) must be greater than "
                               f"max_query_length ({self.max_query_length}) + 3")
        if self.doc_stride < 1 or self.max_query_length < 1:
            raise BertkitError("doc_stride and max_query_length must be at least 1")


def doc_windows(n_tokens: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
    """Google's sliding windows (start, length) over n_tokens pieces; one empty window for none."""
    windows, start = [], 0
    while start < n_tokens:
        length = min(n_tokens - start, max_tokens)
        windows.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, stride)
    return windows or [(0, 0)]


def max_context_windows(windows: Sequence[tuple[int, int]]) -> np.ndarray:
    """The max-context window of every piece (Google's _check_is_max_context): the window that
    maximizes min(left context, right context) + 0.01 * window length, the first on ties."""
    n_tokens = max((s + n for s, n in windows), default=0)
    best = np.full(n_tokens, -np.inf)
    owner = np.full(n_tokens, -1, dtype=np.int64)
    for i, (s, n) in enumerate(windows):
        positions = np.arange(s, s + n)
        score = np.minimum(positions - s, s + n - 1 - positions) + 0.01 * n
        better = score > best[positions]
        best[positions[better]], owner[positions[better]] = score[better], i
    return owner


def create_features(tokenizer: BertTokenizer, examples: Sequence[SquadExample], config: SquadConfig,
                    training: bool = False) -> list[SquadFeature]:
    """Windows of every example, in example order; training adds start/end positions (first answer)."""
    questions = tokenizer.encode_batch([e.question for e in examples], max_length=config.max_query_length + 2)
    contexts = _encode_contexts(tokenizer, examples)
    features = []
    for index, (example, question) in enumerate(zip(examples, questions)):
        features += _example_features(tokenizer, index, example, question, contexts[example.context], config, training)
    return features


def _encode_contexts(tokenizer: BertTokenizer, examples: Sequence[SquadExample]) -> dict[str, Encoding]:
    """Each distinct context encoded once, untruncated."""
    unique = list(dict.fromkeys(e.context for e in examples))
    return dict(zip(unique, tokenizer.encode_batch(unique, max_length=UNLIMITED)))


def _example_features(tokenizer: BertTokenizer, index: int, example: SquadExample, question: Encoding,
                      context: Encoding, config: SquadConfig, training: bool) -> list[SquadFeature]:
    q = slice(1, len(question.ids) - 1)  # the question's pieces, without [CLS]/[SEP]
    c = slice(1, len(context.ids) - 1)
    c_ids, c_offsets, c_words = context.ids[c], context.offsets[c], context.word_ids[c]
    windows = doc_windows(len(c_ids), config.max_seq_length - (q.stop - q.start) - 3, config.doc_stride)
    answer = _answer_pieces(example, c_offsets) if training else None
    owner = max_context_windows(windows)
    features = []
    for w, (start, length) in enumerate(windows):
        window = slice(start, start + length)
        enc = Encoding(
            ids=[tokenizer.cls_id, *question.ids[q], tokenizer.sep_id, *c_ids[window], tokenizer.sep_id],
            type_ids=[0] * (q.stop + 1) + [1] * (length + 1),
            tokens=[],
            offsets=[(0, 0), *question.offsets[q], (0, 0), *c_offsets[window], (0, 0)],
            sequence_ids=[None, *[0] * (q.stop - 1), None, *[1] * length, None],
            word_ids=[None, *question.word_ids[q], None, *c_words[window], None],
        )
        enc.tokens = tokenizer.convert_ids_to_tokens(enc.ids)
        max_context = (owner[start:start + length] == w).tolist()
        feature = SquadFeature(index, w, enc, [False] * (q.stop + 1) + max_context + [False])
        if training:
            feature.start_position, feature.end_position = _window_positions(answer, start, length, q.stop + 1)
        features.append(feature)
    return features


def _answer_pieces(example: SquadExample, offsets: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """(first, last) context piece overlapping the first answer's characters; None if impossible."""
    if example.is_impossible or not example.answers:
        return None
    a = example.answers[0]
    begin, end = a.start, a.start + len(a.text)
    inside = [i for i, (s, e) in enumerate(offsets) if s < end and e > begin]
    return (inside[0], inside[-1]) if inside else None


def _window_positions(answer: tuple[int, int] | None, start: int, length: int, offset: int) -> tuple[int, int]:
    """Positions in the feature of the answer's pieces, or (0, 0) when none or not in this window."""
    if answer is None or answer[0] < start or answer[1] > start + length - 1:
        return 0, 0
    return answer[0] - start + offset, answer[1] - start + offset


def collate(tokenizer: BertTokenizer, features: Sequence[SquadFeature]) -> dict[str, torch.Tensor]:
    """A batch: input_ids, token_type_ids, attention_mask (B, T) padded to the longest, and with
    training features start_positions, end_positions (B,)."""
    batch = tokenizer.pad([f.encoding for f in features])
    if features and features[0].start_position is not None:
        batch["start_positions"] = torch.tensor([f.start_position for f in features], dtype=torch.int64)
        batch["end_positions"] = torch.tensor([f.end_position for f in features], dtype=torch.int64)
    return batch


# ----------------------------------------------------------------------------- split


def split_by_article(dataset_json: Mapping[str, Any], heldout_fraction: float = 0.5,
                     seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a SQuAD dataset into (train, heldout) by article, deterministically: articles are
    ordered by sha256 of "seed:title" and the first round(fraction * n) (at least 1) are held out.
    Both keep the dataset's version and the articles' file order."""
    if not 0 < heldout_fraction < 1:
        raise BertkitError(f"heldout_fraction must be in (0, 1), not {heldout_fraction}")
    articles = list(dataset_json["data"])
    if len(articles) < 2:
        raise BertkitError("need at least two articles to split by article")
    key = [hashlib.sha256(f"{seed}:{a.get('title', i)}".encode()).hexdigest() for i, a in enumerate(articles)]
    n_heldout = min(max(1, round(heldout_fraction * len(articles))), len(articles) - 1)
    heldout = set(sorted(range(len(articles)), key=lambda i: key[i])[:n_heldout])
    version = dataset_json.get("version", "")
    train = [a for i, a in enumerate(articles) if i not in heldout]
    held = [a for i, a in enumerate(articles) if i in heldout]
    return {"version": version, "data": train}, {"version": version, "data": held}


def count_questions(dataset_json: Mapping[str, Any]) -> int:
    """Number of questions in a SQuAD dataset."""
    return sum(len(p["qas"]) for a in dataset_json["data"] for p in a["paragraphs"])

