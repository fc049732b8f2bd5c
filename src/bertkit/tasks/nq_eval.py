"""The official Natural Questions metrics (natural-questions nq_eval.py and eval_utils.py).

Gold has a long answer when at least 2 of its (5, in dev) annotators marked one, and a short
answer when at least 2 marked short spans or yes/no. A predicted long answer is right when it
equals one annotator's non-null long answer; a predicted short answer when its span set equals
one annotator's, or its yes/no equals one annotator's. Spans compare by bytes when both have
them, else by tokens. Precision = right / predicted, recall = right / gold-has-answer. Reported:
F1/precision/recall ignoring scores, and at the score threshold that maximizes F1, with the
recall at precision >= 0.5, 0.75, 0.9.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertkit.errors import BertkitError, file_error
from bertkit.tasks.files import iter_jsonl

NON_NULL_THRESHOLD = 2  # annotators that must agree that there is an answer (eval_utils' flags)


@dataclass(frozen=True)
class Span:
    start_byte: int
    end_byte: int
    start_token: int
    end_token: int

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Span:
        """From an NQ span object; missing byte offsets (simplified data) are -1."""
        span = cls(int(record.get("start_byte", -1)), int(record.get("end_byte", -1)),
                   int(record.get("start_token", -1)), int(record.get("end_token", -1)))
        for a, b, kind in ((span.start_byte, span.end_byte, "byte"), (span.start_token, span.end_token, "token")):
            if (a < 0) != (b < 0) or (a >= 0 and a >= b):
                raise BertkitError(f"invalid {kind} span [{a}, {b})")
        return span

    def is_null(self) -> bool:
        """No span: every offset negative."""
        return self.start_byte < 0 and self.end_byte < 0 and self.start_token < 0 and self.end_token < 0

    def matches(self, other: Span) -> bool:
        """Equal non-null spans: by bytes when both have them, else (or then) by tokens."""
        if self.start_byte >= 0 and other.start_byte >= 0 and (self.start_byte, self.end_byte) == (other.start_byte, other.end_byte):
            return True
        return self.start_token >= 0 and other.start_token >= 0 and (
            (self.start_token, self.end_token) == (other.start_token, other.end_token))


@dataclass(frozen=True)
class Label:
    """One annotation, or one prediction (with its scores)."""

    long_answer: Span
    short_answers: tuple[Span, ...]
    yes_no_answer: str  # "yes", "no" or "none"
    long_score: float = 0.0
    short_score: float = 0.0

    def has_short(self) -> bool:
        """A non-null short span, or a yes/no answer."""
        return any(not s.is_null() for s in self.short_answers) or self.yes_no_answer != "none"


def _label(record: Mapping[str, Any], scored: bool) -> Label:
    yes_no = str(record.get("yes_no_answer", "NONE")).lower()
    if yes_no not in ("yes", "no", "none"):
        raise BertkitError(f"invalid yes_no_answer {record.get('yes_no_answer')!r}")
    shorts = tuple(Span.of(s) for s in record.get("short_answers", []))
    if scored and yes_no != "none" and any(not s.is_null() for s in shorts):
        raise BertkitError("a prediction cannot have both a yes/no answer and short answers")
    long = Span.of(record["long_answer"]) if "long_answer" in record else Span(-1, -1, -1, -1)
    if scored:
        return Label(long, shorts, yes_no, float(record["long_answer_score"]), float(record["short_answers_score"]))
    return Label(long, shorts, yes_no)


def read_nq_gold(path: str | Path) -> dict[int, list[Label]]:
    """example_id -> its annotations, from NQ jsonl(.gz) (original or simplified)."""
    gold = {}
    for number, record in iter_jsonl(path):
        try:
            gold[int(record["example_id"])] = [_label(a, scored=False) for a in record["annotations"]]
        except (KeyError, TypeError, ValueError, BertkitError) as e:
            raise file_error(path, f"line {number}: bad annotation ({e})") from None
    return gold


def read_nq_predictions(source: str | Path | Mapping[str, Any]) -> dict[int, Label]:
    """example_id -> prediction, from {"predictions": [...]} (a file or the loaded object)."""
    where = str(source) if isinstance(source, (str, Path)) else "<predictions>"
    if isinstance(source, (str, Path)):
        try:
            source = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise file_error(where, f"cannot read JSON: {e}") from None
    if not isinstance(source, Mapping) or not isinstance(source.get("predictions"), list):
        raise file_error(where, 'expected {"predictions": [...]}')
    out = {}
    for i, p in enumerate(source["predictions"]):
        try:
            out[int(p["example_id"])] = _label(p, scored=True)
        except (KeyError, TypeError, ValueError, BertkitError) as e:
            raise file_error(where, f"prediction {i}: {e}") from None
    return out


def gold_has_long(gold: Sequence[Label], threshold: int = NON_NULL_THRESHOLD) -> bool:
    """At least `threshold` annotators marked a long answer."""
    return sum(not g.long_answer.is_null() for g in gold) >= threshold


def gold_has_short(gold: Sequence[Label], threshold: int = NON_NULL_THRESHOLD) -> bool:
    """At least `threshold` annotators marked short spans or yes/no."""
    return sum(g.has_short() for g in gold) >= threshold


def _same_span_set(gold: Sequence[Span], pred: Sequence[Span]) -> bool:
    g = [s for s in gold if not s.is_null()]
    p = [s for s in pred if not s.is_null()]
    return all(any(x.matches(y) for y in g) for x in p) and all(any(x.matches(y) for y in p) for x in g)


def score_long(gold: Sequence[Label], pred: Label, threshold: int = NON_NULL_THRESHOLD) -> tuple[bool, bool, bool, float]:
    """(gold has answer, prediction has answer, prediction right, score) for the long answer."""
    has_gold, has_pred = gold_has_long(gold, threshold), not pred.long_answer.is_null()
    right = has_gold and has_pred and any(not g.long_answer.is_null() and g.long_answer.matches(pred.long_answer)
                                          for g in gold)
    return has_gold, has_pred, right, pred.long_score


def score_short(gold: Sequence[Label], pred: Label, threshold: int = NON_NULL_THRESHOLD) -> tuple[bool, bool, bool, float]:
    """(gold has answer, prediction has answer, prediction right, score) for the short answer."""
    has_gold, has_pred = gold_has_short(gold, threshold), pred.has_short()
    right = False
    if has_gold and has_pred:
        if pred.yes_no_answer != "none":
            right = any(pred.yes_no_answer == g.yes_no_answer for g in gold)
        else:
            right = any(_same_span_set(g.short_answers, pred.short_answers) for g in gold)
    return has_gold, has_pred, right, pred.short_score


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _divide(x: float, y: float) -> float:
    return 0.0 if y == 0 else x / y


def f1_ignoring_scores(stats: Sequence[tuple[bool, bool, bool, float]], prefix: str) -> dict[str, float]:
    """nq_eval's compute_f1: every prediction counts, whatever its score."""
    right = sum(s[2] for s in stats)
    precision, recall = _divide(right, sum(s[1] for s in stats)), _divide(right, sum(s[0] for s in stats))
    return {f"{prefix}n": len(stats), f"{prefix}f1": _f1(precision, recall),
            f"{prefix}precision": precision, f"{prefix}recall": recall}


def best_threshold(stats: Sequence[tuple[bool, bool, bool, float]], prefix: str,
                   targets: Sequence[float] = (0.5, 0.75, 0.9)) -> dict[str, float]:
    """nq_eval's compute_pr_curves: predictions scored below a threshold count as null; the
    threshold with the best F1, and the best recall with precision >= each target."""
    ordered = sorted(stats, key=lambda s: s[3], reverse=True)
    total_gold = sum(s[0] for s in ordered)
    right = predicted = 0
    points: dict[float, tuple[float, float]] = {}
    for has_gold, has_pred, correct, score in ordered:
        right, predicted = right + correct, predicted + has_pred
        points[score] = (_divide(right, predicted), _divide(right, total_gold))  # ties: the last
    best = (0.0, 0.0, 0.0, 0.0)
    at = {t: (0.0, 0.0) for t in targets}
    for score, (precision, recall) in points.items():
        for t in targets:
            if precision >= t and recall > at[t][0]:
                at[t] = (recall, precision)
        if _f1(precision, recall) > best[0]:
            best = (_f1(precision, recall), precision, recall, score)
    out = {f"{prefix}best-threshold-f1": best[0], f"{prefix}best-threshold-precision": best[1],
           f"{prefix}best-threshold-recall": best[2], f"{prefix}best-threshold": best[3]}
    for t in targets:
        out[f"{prefix}recall-at-precision>={t:.2}"] = at[t][0]
        out[f"{prefix}precision-at-precision>={t:.2}"] = at[t][1]
    return out


def evaluate_nq(gold: Mapping[int, Sequence[Label]], predictions: Mapping[int, Label],
                threshold: int = NON_NULL_THRESHOLD) -> dict[str, float]:
    """All of nq_eval's numbers: long-answer-/short-answer- f1, precision, recall, n (ignoring
    scores) and long-/short- best-threshold-* and recall/precision-at-precision>=*.
    Gold and predictions must cover the same example ids."""
    if set(gold) != set(predictions):
        missing = sorted(set(gold) ^ set(predictions))
        raise BertkitError(f"the example ids of gold and predictions differ ({len(missing)}, e.g. {missing[0]})")
    long_stats = [score_long(gold[k], predictions[k], threshold) for k in gold]
    short_stats = [score_short(gold[k], predictions[k], threshold) for k in gold]
    out = {**f1_ignoring_scores(long_stats, "long-answer-"), **f1_ignoring_scores(short_stats, "short-answer-")}
    out.update(best_threshold(long_stats, "long-"))
    out.update(best_threshold(short_stats, "short-"))
    return out
