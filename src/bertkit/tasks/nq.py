"""Natural Questions in the BERT-joint style (Alberti et al. 2019, google-research/language
bert_joint/run_nq.py): the simplified jsonl reader, examples, windowed features with answer-type
labels, and predictions in the format of the official nq_eval.py (see ``bertkit.tasks.nq_eval``).

An example's context is BERT-joint's: ``[ContextId=-1] [NoLongAnswer]`` then, for each top-level,
non-empty long-answer candidate (at most max_contexts contexts in all), ``[ContextId=i]
[Paragraph=k]`` (or Table/List/Other: the candidate's type and its rank among candidates of that
type, capped at max_position) followed by its non-HTML tokens; the question is ``[Q]`` + its pieces,
keeping the *last* max_query_length (as run_nq.py does). The markers are single tokens: those the
vocabulary lacks are given its ``[unusedN]`` tokens, in the fixed order of ``marker_tokens``, as
BERT-joint's vocab-nq.txt does; past the last [unused] token they become [UNK], as in run_nq.py.
"""

from __future__ import annotations

import enum
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit.errors import BertkitError, file_error
from bertkit.tasks.files import iter_jsonl
from bertkit.tasks.squad import doc_windows
from bertkit.tokenizer import BertTokenizer, Encoding

_HTML = re.compile(r"^<[^>]*>$")
_MARKER = re.compile(r"^\[[^ ]*\]$")  # run_nq.py's special token: non-space text in brackets
CANDIDATE_TYPES = ("Paragraph", "Table", "List", "Other")
N_BEST_SIZE = 10  # run_nq.py's n_best_size


class AnswerType(enum.IntEnum):
    """run_nq.py's answer types (the answer-type head's classes)."""

    UNKNOWN = 0  # null: no long answer
    YES = 1
    NO = 2
    SHORT = 3
    LONG = 4


@dataclass(frozen=True)
class Candidate:
    start_token: int
    end_token: int  # exclusive
    top_level: bool = True


@dataclass(frozen=True)
class Annotation:
    long_answer: tuple[int, int, int]  # (start_token, end_token, candidate_index); -1s when null
    short_answers: tuple[tuple[int, int], ...]  # [start_token, end_token) spans
    yes_no_answer: str  # "YES", "NO" or "NONE"


@dataclass
class NqEntry:
    """One line of an NQ jsonl file (simplified or original format)."""

    example_id: int
    question: str
    tokens: list[str]
    is_html: list[bool]
    candidates: list[Candidate]
    annotations: list[Annotation]
    title: str = ""


def read_nq(path: str | Path) -> list[NqEntry]:
    """NQ entries of a jsonl(.gz) file: simplified (document_text, split on single spaces) or
    original (document_tokens with html_token flags)."""
    return list(iter_nq(path))


def iter_nq(path: str | Path) -> Iterator[NqEntry]:
    """``read_nq`` one entry at a time (NQ's training set does not fit in memory as entries)."""
    for number, record in iter_jsonl(path):
        try:
            entry = _entry(record)
        except (KeyError, TypeError, ValueError) as e:
            raise file_error(path, f"line {number}: not an NQ example ({type(e).__name__}: {e})") from None
        yield entry


def _entry(r: dict) -> NqEntry:
    if "document_text" in r:
        tokens = r["document_text"].split(" ")
        html = [bool(_HTML.match(t)) for t in tokens]
    else:
        tokens = [t["token"] for t in r["document_tokens"]]
        html = [bool(t["html_token"]) for t in r["document_tokens"]]
    candidates = [Candidate(int(c["start_token"]), int(c["end_token"]), bool(c.get("top_level", True)))
                  for c in r["long_answer_candidates"]]
    annotations = [Annotation((int(a["long_answer"]["start_token"]), int(a["long_answer"]["end_token"]),
                               int(a["long_answer"].get("candidate_index", -1))),
                              tuple((int(s["start_token"]), int(s["end_token"])) for s in a["short_answers"]),
                              str(a.get("yes_no_answer", "NONE")).upper())
                   for a in r.get("annotations", [])]
    return NqEntry(int(r["example_id"]), r["question_text"], tokens, html, candidates, annotations,
                   r.get("document_title", ""))


# ----------------------------------------------------------------------------- examples


@dataclass
class NqExample:
    """An entry as BERT-joint sees it: context words with their document token (-1: marker), and for
    training the answer's type and first/last word (None for UNKNOWN)."""

    example_id: int
    question: str
    words: list[str]
    word_to_token: list[int]
    candidates: list[Candidate]
    answer_type: AnswerType | None = None
    answer_words: tuple[int, int] | None = None


def _candidate_type(entry: NqEntry, c: Candidate) -> str:
    first = entry.tokens[c.start_token] if c.start_token < len(entry.tokens) else ""
    if first == "<Table>":
        return "Table"
    if first == "<P>":
        return "Paragraph"
    if first in ("<Ul>", "<Dl>", "<Ol>"):
        return "List"
    return "Other"


def _contexts(entry: NqEntry, max_contexts: int, max_position: int) -> list[tuple[int, str, list[int]]]:
    """(candidate index, type marker, document token indices) of the kept contexts, BERT-joint's order."""
    counts: Counter[str] = Counter()
    out: list[tuple[int, str, list[int]]] = [(-1, "[NoLongAnswer]", [])]
    for i, c in enumerate(entry.candidates):
        text = [t for t in range(c.start_token, c.end_token) if not entry.is_html[t]]
        if not c.top_level or not any(entry.tokens[t].strip() for t in text):
            continue
        kind = _candidate_type(entry, c)
        counts[kind] = min(counts[kind] + 1, max_position)
        if len(out) < max_contexts:
            out.append((i, f"[{kind}={counts[kind]}]", text))
    return out


def _first_annotation(entry: NqEntry) -> tuple[Annotation | None, tuple[int, int] | None]:
    """run_nq.py's get_first_annotation: the first (by candidate) annotation with short answers and
    its [first start, last end) span, else the first with a long answer, else (None, None)."""
    positive = sorted((a for a in entry.annotations if a.long_answer[0] >= 0), key=lambda a: a.long_answer[2])
    for a in positive:
        if a.short_answers:
            return a, (a.short_answers[0][0], a.short_answers[-1][1])
    return (positive[0], None) if positive else (None, None)


def create_example(entry: NqEntry, training: bool = False, max_contexts: int = 48,
                   max_position: int = 50) -> NqExample | None:
    """BERT-joint's example; in training None when the annotated candidate is not among the kept
    contexts (run_nq.py skips those: its answer cannot be found)."""
    words, word_to_token = ["[ContextId=-1]", "[NoLongAnswer]"], [-1, -1]
    spans: dict[int, tuple[int, int]] = {}  # candidate index -> (first, last) word of its text
    for index, marker, tokens in _contexts(entry, max_contexts, max_position)[1:]:
        words += [f"[ContextId={index}]", marker]
        word_to_token += [-1, -1]
        spans[index] = (len(words), len(words) + len(tokens) - 1)
        words += [entry.tokens[t] for t in tokens]
        word_to_token += tokens
    example = NqExample(entry.example_id, entry.question, words, word_to_token, entry.candidates)
    if training:
        annotation, short = _first_annotation(entry)
        if annotation is None:
            example.answer_type = AnswerType.UNKNOWN
            return example
        if annotation.long_answer[2] not in spans:
            return None
        example.answer_type, example.answer_words = _answer(annotation, short, spans, word_to_token)
    return example


def _answer(a: Annotation, short: tuple[int, int] | None, spans: dict[int, tuple[int, int]],
            word_to_token: list[int]) -> tuple[AnswerType, tuple[int, int] | None]:
    first, last = spans[a.long_answer[2]]
    if short is not None:
        inside = [w for w in range(first, last + 1) if short[0] <= word_to_token[w] < short[1]]
        if not inside:
            return AnswerType.UNKNOWN, None
        return AnswerType.SHORT, (inside[0], inside[-1])
    kind = {"YES": AnswerType.YES, "NO": AnswerType.NO}.get(a.yes_no_answer, AnswerType.LONG)
    return kind, (first, last)


# ----------------------------------------------------------------------------- features


def marker_tokens(max_contexts: int = 48, max_position: int = 50) -> list[str]:
    """The BERT-joint markers in the order they are given [unused] tokens."""
    out = ["[Q]", "[NoLongAnswer]"]
    out += [f"[{kind}={p}]" for p in range(1, max_position + 1) for kind in CANDIDATE_TYPES]
    return out + [f"[ContextId={i}]" for i in range(-1, max_contexts)]


def marker_ids(tokenizer: BertTokenizer, max_contexts: int = 48, max_position: int = 50) -> dict[str, int]:
    """Marker -> token id: the vocabulary's own entry, else the next free [unusedN] token."""
    unused = iter(sorted((i for t, i in tokenizer.vocab.items() if re.fullmatch(r"\[unused\d+\]", t))))
    out = {}
    for marker in marker_tokens(max_contexts, max_position):
        if marker in tokenizer.vocab:
            out[marker] = tokenizer.vocab[marker]
        else:
            out[marker] = next(unused, tokenizer.unk_id)
    return out


@dataclass(frozen=True)
class NqConfig:
    max_seq_length: int = 512
    doc_stride: int = 128
    max_query_length: int = 64
    max_contexts: int = 48
    max_position: int = 50
    include_unknowns: float = -1.0  # training: keep a window without the answer with this probability

    def __post_init__(self) -> None:
        if self.max_seq_length <= self.max_query_length + 3:
            raise BertkitError(f"max_seq_length ({self.max_seq_length}) must be greater than "
                               f"max_query_length ({self.max_query_length}) + 3")


@dataclass
class NqFeature:
    """A window: token_map[i] is the document token of piece i (-1: question, marker, special)."""

    example_index: int
    window_index: int
    encoding: Encoding
    token_map: list[int]
    start_position: int = 0
    end_position: int = 0
    answer_type: AnswerType = AnswerType.UNKNOWN


def _pieces(tokenizer: BertTokenizer, words: Sequence[str], markers: dict[str, int]) -> tuple[list[int], list[int]]:
    """(ids, word index of each id): markers as one token (unknown ones [UNK]), words as pieces."""
    plain = [i for i, w in enumerate(words) if not _MARKER.match(w)]
    enc = tokenizer.encode([words[i] for i in plain], max_length=sys.maxsize, is_split_into_words=True)
    by_word: dict[int, list[int]] = defaultdict(list)
    for token_id, w in zip(enc.ids[1:-1], enc.word_ids[1:-1]):
        by_word[plain[w]].append(token_id)  # type: ignore[index]
    ids, owner = [], []
    for i, w in enumerate(words):
        pieces = [markers.get(w, tokenizer.vocab.get(w, tokenizer.unk_id))] if _MARKER.match(w) else by_word[i]
        ids += pieces
        owner += [i] * len(pieces)
    return ids, owner


def create_features(tokenizer: BertTokenizer, examples: Sequence[NqExample], config: NqConfig,
                    training: bool = False, seed: int = 0) -> list[NqFeature]:
    """BERT-joint's windowed features; in training each window gets start/end positions and the
    answer type, windows without the answer (and UNKNOWN examples) kept with probability
    config.include_unknowns (seeded) as UNKNOWN at [CLS]."""
    return list(iter_features(tokenizer, examples, config, training, seed))


def iter_features(tokenizer: BertTokenizer, examples: Iterable[NqExample], config: NqConfig,
                  training: bool = False, seed: int = 0) -> Iterator[NqFeature]:
    """``create_features`` one example at a time (``example_index`` counts the examples)."""
    markers = marker_ids(tokenizer, config.max_contexts, config.max_position)
    rng = random.Random(seed)
    for index, example in enumerate(examples):
        yield from _example_features(tokenizer, index, example, markers, config, training, rng)


def _example_features(tokenizer: BertTokenizer, index: int, example: NqExample, markers: dict[str, int],
                      config: NqConfig, training: bool, rng: random.Random) -> list[NqFeature]:
    question = tokenizer.encode(example.question, max_length=sys.maxsize).ids[1:-1]
    query = ([markers["[Q]"]] + question)[-config.max_query_length:]
    ids, owner = _pieces(tokenizer, example.words, markers)
    answer = _answer_pieces(example, owner) if training else None
    offset = len(query) + 2
    out = []
    for w, (start, length) in enumerate(doc_windows(len(ids), config.max_seq_length - len(query) - 3, config.doc_stride)):
        window = range(start, start + length)
        enc = Encoding(
            ids=[tokenizer.cls_id, *query, tokenizer.sep_id, *(ids[i] for i in window), tokenizer.sep_id],
            type_ids=[0] * offset + [1] * (length + 1), tokens=[], offsets=[(0, 0)] * (offset + length + 1),
            sequence_ids=[None, *[0] * len(query), None, *[1] * length, None],
            word_ids=[None] * offset + [owner[i] for i in window] + [None])
        enc.tokens = tokenizer.convert_ids_to_tokens(enc.ids)
        token_map = [-1] * offset + [example.word_to_token[owner[i]] for i in window] + [-1]
        feature = NqFeature(index, w, enc, token_map)
        if training and not _label(feature, example, answer, start, length, offset, config, rng):
            continue
        out.append(feature)
    return out


def _answer_pieces(example: NqExample, owner: list[int]) -> tuple[int, int] | None:
    if example.answer_words is None:
        return None
    first, last = example.answer_words
    inside = [i for i, w in enumerate(owner) if first <= w <= last]
    return (inside[0], inside[-1]) if inside else None


def _label(feature: NqFeature, example: NqExample, answer: tuple[int, int] | None, start: int, length: int,
           offset: int, config: NqConfig, rng: random.Random) -> bool:
    """Set the window's labels; False when it is to be left out."""
    inside = answer is not None and start <= answer[0] and answer[1] <= start + length - 1
    if not inside or example.answer_type == AnswerType.UNKNOWN:
        if config.include_unknowns < 0 or rng.random() > config.include_unknowns:
            return False
        return True  # UNKNOWN at [CLS]: the defaults
    feature.start_position = answer[0] - start + offset  # type: ignore[index]
    feature.end_position = answer[1] - start + offset  # type: ignore[index]
    feature.answer_type = example.answer_type  # type: ignore[assignment]
    return True


def collate(tokenizer: BertTokenizer, features: Sequence[NqFeature]) -> dict[str, torch.Tensor]:
    """A batch: input_ids, token_type_ids, attention_mask (B, T) padded to the longest, and
    start_positions, end_positions, answer_types (B,) (meaningful for training features)."""
    batch = tokenizer.pad([f.encoding for f in features])
    for name, attr in (("start_positions", "start_position"), ("end_positions", "end_position"),
                       ("answer_types", "answer_type")):
        batch[name] = torch.tensor([int(getattr(f, attr)) for f in features], dtype=torch.int64)
    return batch


# ----------------------------------------------------------------------------- predictions


def _span(start: int, end: int) -> dict[str, int]:
    return {"start_token": start, "end_token": end, "start_byte": -1, "end_byte": -1}


def _best_span(feature: NqFeature, start: np.ndarray, end: np.ndarray, n_best: int,
               max_answer_length: int) -> tuple[float, int, int] | None:
    """run_nq.py's best (score, start, end) piece span of one window: score = start + end logits
    minus those of [CLS]; the top n_best starts/ends after position 0, both mapping to document
    tokens, end >= start, at most max_answer_length pieces."""
    n = len(feature.encoding.ids)
    start, end = start[:n], end[:n]
    starts = 1 + np.argsort(-start[1:], kind="stable")[:n_best]
    ends = 1 + np.argsort(-end[1:], kind="stable")[:n_best]
    mapped = np.array(feature.token_map) >= 0
    s, e = starts[:, None], ends[None, :]
    valid = mapped[s] & mapped[e] & (e >= s) & (e - s + 1 <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, start[s] + end[e], -np.inf) - (start[0] + end[0])
    r, c = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[r, c]), int(starts[r]), int(ends[c])


def compute_predictions(examples: Sequence[NqExample], features: Sequence[NqFeature],
                        start_logits: Sequence[Sequence[float]] | np.ndarray,
                        end_logits: Sequence[Sequence[float]] | np.ndarray,
                        answer_type_logits: Sequence[Sequence[float]] | np.ndarray | None = None,
                        n_best_size: int = N_BEST_SIZE, max_answer_length: int = 30) -> list[dict[str, Any]]:
    """NQ predictions (nq_eval.py's format) from the model's logits, run_nq.py's way: the best span
    over all windows is the short answer, the first top-level candidate containing it the long one,
    both scored by the span's score. With answer_type_logits (F, 5), the answer type of the best
    span's window decides further: YES/NO give yes_no_answer and no short span, LONG no short span.
    An example without any valid span predicts nothing (null spans, score NULL_SCORE)."""
    if not len(start_logits) == len(end_logits) == len(features):
        raise BertkitError(f"{len(start_logits)}/{len(end_logits)} rows of logits for {len(features)} features")
    best: dict[int, tuple[float, int, int, int]] = {}
    for f, feature in enumerate(features):
        found = _best_span(feature, np.asarray(start_logits[f], dtype=np.float64),
                           np.asarray(end_logits[f], dtype=np.float64), n_best_size, max_answer_length)
        if found and (feature.example_index not in best or found[0] > best[feature.example_index][0]):
            best[feature.example_index] = (found[0], f, found[1], found[2])
    types = None if answer_type_logits is None else [int(np.argmax(row)) for row in answer_type_logits]
    return [_prediction(examples[i], features, best.get(i), types) for i in range(len(examples))]


NULL_SCORE = -1e9  # score of a prediction without any span


def _prediction(example: NqExample, features: Sequence[NqFeature], best: tuple[float, int, int, int] | None,
                types: list[int] | None) -> dict[str, Any]:
    out = {"example_id": example.example_id, "long_answer": _span(-1, -1), "long_answer_score": NULL_SCORE,
           "short_answers": [], "short_answers_score": NULL_SCORE, "yes_no_answer": "NONE"}
    if best is None:
        return out
    score, f, s, e = best
    short = (features[f].token_map[s], features[f].token_map[e] + 1)
    long = next(((c.start_token, c.end_token) for c in example.candidates
                 if c.top_level and c.start_token <= short[0] and c.end_token >= short[1]), (-1, -1))
    out.update(long_answer=_span(*long), long_answer_score=score, short_answers=[_span(*short)],
               short_answers_score=score)
    kind = None if types is None else AnswerType(types[f])
    if kind in (AnswerType.YES, AnswerType.NO):
        out.update(yes_no_answer=kind.name, short_answers=[])
    elif kind == AnswerType.LONG:
        out["short_answers"] = []
    return out
