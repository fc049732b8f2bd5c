"""SQuAD evaluation with the official scripts' definitions (evaluate-v1.1.py and evaluate-v2.0.py).

Normalization: lower-case, drop ASCII punctuation (Python's string.punctuation), drop the words
a/an/the, fold whitespace. Exact match and token F1 are the maximum over the gold answers.

v1.1 (no question without answers, no na-probs): every question counts; one without a prediction
scores 0. v2.0: gold answers that normalize to "" are dropped and a question left with none is
unanswerable (only "" is right); questions without a prediction are left out; with na-probs
(``null_odds.json``) a question whose value exceeds ``na_prob_thresh`` (default 1.0, as the script)
counts as predicted unanswerable, and the best thresholds for exact and F1 are searched.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Mapping
from typing import Any

from bertkit.errors import BertkitError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, remove punctuation, articles (a, an, the) and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_score(gold: str, prediction: str) -> int:
    """1 if the normalized texts are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1_score(gold: str, prediction: str) -> float:
    """Token F1 of the normalized texts; when either is empty, 1 if both are, else 0 (v2.0's rule;
    on v1.1 data it gives the same as v1.1's)."""
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _questions(dataset_json: Mapping[str, Any]) -> list[dict]:
    try:
        return [qa for article in dataset_json["data"] for p in article["paragraphs"] for qa in p["qas"]]
    except (KeyError, TypeError):
        raise BertkitError("not a SQuAD dataset: expected {'data': [{'paragraphs': [{'qas': ...}]}]}") from None


def is_v2(dataset_json: Mapping[str, Any]) -> bool:
    """A SQuAD 2.0 dataset: version "v2.0", or questions marked is_impossible."""
    return str(dataset_json.get("version", "")).startswith("v2") or any(
        "is_impossible" in qa for qa in _questions(dataset_json))


def evaluate_squad(dataset_json: Mapping[str, Any], predictions: Mapping[str, str],
                   na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict[str, float]:
    """Scores in percent, as the official script for the dataset's version prints them.

    v1.1: {"exact", "f1", "total"}. v2.0 (or na_probs given): also HasAns_/NoAns_ exact, f1,
    total; with na_probs also best_exact, best_exact_thresh, best_f1, best_f1_thresh.
    """
    questions = _questions(dataset_json)
    if not questions:
        raise BertkitError("the dataset has no questions")
    if not is_v2(dataset_json) and na_probs is None:
        return _evaluate_v1(questions, predictions)
    return _evaluate_v2(questions, predictions, na_probs, na_prob_thresh)


def _evaluate_v1(questions: list[dict], predictions: Mapping[str, str]) -> dict[str, float]:
    exact = f1 = 0.0
    for qa in questions:
        if qa["id"] in predictions:
            golds = [a["text"] for a in qa["answers"]]
            exact += max(exact_score(g, predictions[qa["id"]]) for g in golds)
            f1 += max(f1_score(g, predictions[qa["id"]]) for g in golds)
    total = len(questions)
    return {"exact": 100.0 * exact / total, "f1": 100.0 * f1 / total, "total": total}


def raw_scores(questions: list[dict], predictions: Mapping[str, str]) -> tuple[dict[str, int], dict[str, float]]:
    """v2.0's per-question exact and F1 (questions without a prediction left out)."""
    exact, f1 = {}, {}
    for qa in questions:
        if qa["id"] not in predictions:
            continue
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        exact[qa["id"]] = max(exact_score(g, predictions[qa["id"]]) for g in golds)
        f1[qa["id"]] = max(f1_score(g, predictions[qa["id"]]) for g in golds)
    return exact, f1


def _evaluate_v2(questions: list[dict], predictions: Mapping[str, str], na_probs: Mapping[str, float] | None,
                 na_prob_thresh: float) -> dict[str, float]:
    has_ans = {qa["id"]: bool(qa["answers"]) for qa in questions}
    exact_raw, f1_raw = raw_scores(questions, predictions)
    if not exact_raw:
        raise BertkitError("no prediction for any question of the dataset")
    probs = {k: 0.0 for k in predictions} if na_probs is None else na_probs
    missing = [k for k in exact_raw if k not in probs]
    if missing:
        raise BertkitError(f"no-answer probabilities lack {len(missing)} predicted questions, e.g. {missing[0]!r}")
    exact = _thresholded(exact_raw, probs, has_ans, na_prob_thresh)
    f1 = _thresholded(f1_raw, probs, has_ans, na_prob_thresh)
    out = _mean_scores(exact, f1, list(exact))
    for prefix, ids in (("HasAns", [k for k in has_ans if has_ans[k]]), ("NoAns", [k for k in has_ans if not has_ans[k]])):
        if ids:
            out.update({f"{prefix}_{k}": v for k, v in _mean_scores(exact, f1, ids).items()})
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_threshold(predictions, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_threshold(predictions, f1_raw, na_probs, has_ans)
    return out


def rewrite_threshold(dataset_json: Mapping[str, Any], predictions: Mapping[str, str],
                      na_probs: Mapping[str, float]) -> float:
    """The null threshold at which predictions ("" iff na-prob > threshold) score the official
    best_f1: its search, but -inf where leaving every question unanswered is best."""
    questions = _questions(dataset_json)
    has_ans = {qa["id"]: bool(qa["answers"]) for qa in questions}
    _, f1 = raw_scores(questions, predictions)
    return find_best_threshold(predictions, f1, na_probs, has_ans, start_threshold=-math.inf)[1]


def _thresholded(scores: Mapping[str, float], na_probs: Mapping[str, float], has_ans: Mapping[str, bool],
                 thresh: float) -> dict[str, float]:
    return {k: float(not has_ans[k]) if na_probs[k] > thresh else s for k, s in scores.items()}


def _mean_scores(exact: Mapping[str, float], f1: Mapping[str, float], ids: list[str]) -> dict[str, float]:
    """The official make_eval_dict: a question of `ids` without a prediction raises KeyError there;
    here it is an error naming it."""
    missing = [k for k in ids if k not in exact]
    if missing:
        raise BertkitError(f"no prediction for question {missing[0]!r} ({len(missing)} missing)")
    n = len(ids)
    return {"exact": 100.0 * sum(exact[k] for k in ids) / n, "f1": 100.0 * sum(f1[k] for k in ids) / n, "total": n}


def find_best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float],
                        na_probs: Mapping[str, float], has_ans: Mapping[str, bool],
                        start_threshold: float = 0.0) -> tuple[float, float]:
    """(best score in percent, threshold) over null thresholds, as the official find_best_thresh:
    start from all-unanswered, answer questions in increasing na-prob order, keep the best; a
    question is then predicted unanswerable iff its na-prob > threshold. When all-unanswered is
    best the official script says 0.0 (start_threshold), which does not leave all unanswered."""
    current = best = float(sum(1 for k in has_ans if not has_ans[k]))
    threshold = start_threshold
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, threshold = current, na_probs[qid]
    return 100.0 * best / len(scores), float(threshold)
