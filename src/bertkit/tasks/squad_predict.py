"""SQuAD post-processing: start/end logits -> n-best answers -> predictions.json, nbest_predictions.json,
null_odds.json; for v2.0 the null threshold search and the predictions re-written at the best one.

Google's write_predictions, model-independent (it takes logits arrays), with three changes:
the answer text is the context's own characters (the tokenizer's offsets replace get_final_text);
a question without any valid span (empty context, all spans invalid) predicts "" rather than the
nonce "empty"; and for v2.0 a question whose n-best is all null gets null odds NO_SPAN_ODDS and
predicts "" at every threshold, where Google's code fails.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import BertkitError
from bertkit.io import atomic_open
from bertkit.tasks.squad import SquadExample, SquadFeature
from bertkit.tasks.squad_eval import evaluate_squad, rewrite_threshold

NO_SPAN_ODDS = 1e6  # null odds of a question with no non-null candidate (Google's "large" null score)


@dataclass
class SquadPredictions:
    """Post-processed answers; null_odds and best_span only for v2.0 (None for v1.1)."""

    predictions: dict[str, str]  # qas_id -> answer text ("" = no answer)
    nbest: dict[str, list[dict[str, Any]]]  # qas_id -> [{text, probability, start_logit, end_logit}]
    null_odds: dict[str, float] | None = None  # null score - best non-null score
    best_span: dict[str, str] | None = None  # the best non-null text ("" if none)
    null_threshold: float = 0.0

    def at_threshold(self, threshold: float) -> SquadPredictions:
        """v2.0 predictions re-made at another null threshold: "" iff null odds > threshold."""
        if self.null_odds is None or self.best_span is None:
            raise BertkitError("a null threshold applies to SQuAD 2.0 predictions only")
        predictions = {q: "" if self.null_odds[q] > threshold else self.best_span[q] for q in self.predictions}
        return replace(self, predictions=predictions, null_threshold=float(threshold))


def _as_rows(logits: np.ndarray | Sequence[Sequence[float]], n: int, name: str) -> list[np.ndarray]:
    rows = [np.asarray(row, dtype=np.float64) for row in logits]
    if len(rows) != n:
        raise BertkitError(f"{name}: {len(rows)} rows of logits for {n} features")
    return rows


def _candidates(feature: SquadFeature, f: int, start: np.ndarray, end: np.ndarray, n_best: int,
                max_answer_length: int) -> list[tuple[float, int, int, int]]:
    """Google's valid (score, feature, start, end) among the n_best start x n_best end pieces: both in
    the context, start in its max-context window, end >= start, at most max_answer_length pieces."""
    n = len(feature.encoding.ids)
    start, end = start[:n], end[:n]
    starts = np.argsort(-start, kind="stable")[:n_best]
    ends = np.argsort(-end, kind="stable")[:n_best]
    context = np.array([s == 1 for s in feature.encoding.sequence_ids])
    max_context = np.array(feature.max_context)
    s, e = starts[:, None], ends[None, :]  # (k, 1), (1, k)
    valid = context[s] & max_context[s] & context[e] & (e >= s) & (e - s + 1 <= max_answer_length)
    rows, cols = np.nonzero(valid)  # row-major: Google's loop order
    return [(float(start[starts[r]] + end[ends[c]]), f, int(starts[r]), int(ends[c])) for r, c in zip(rows, cols)]


def _nbest(example: SquadExample, features: list[SquadFeature], found: list[tuple[float, int, int, int]],
           starts: list[np.ndarray], ends: list[np.ndarray], null: tuple[float, float, float] | None,
           n_best: int) -> list[dict[str, Any]]:
    """The n-best list: distinct texts by score; for v2.0 Google's null answer ("", [CLS] logits of
    the window with the smallest null score), ranked with the spans or appended after them."""
    prelim = list(found) + ([(null[0], -1, 0, 0)] if null is not None else [])
    entries: list[tuple[str, float, float]] = []
    seen: set[str] = set()
    for _, f, s, e in sorted(prelim, key=lambda x: x[0], reverse=True):  # stable: null after ties
        if len(entries) >= n_best:
            break
        if f < 0:
            text, start_logit, end_logit = "", null[1], null[2]  # type: ignore[index]
        else:
            offsets = features[f].encoding.offsets
            text = example.context[offsets[s][0]:offsets[e][1]]
            start_logit, end_logit = float(starts[f][s]), float(ends[f][e])
            if text in seen:
                continue
        seen.add(text)
        entries.append((text, start_logit, end_logit))
    if null is not None and "" not in seen:
        entries.append(("", null[1], null[2]))
    if not entries:
        entries.append(("", 0.0, 0.0))
    scores = np.array([s + e for _, s, e in entries])
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    return [{"text": t, "probability": float(p), "start_logit": s, "end_logit": e}
            for (t, s, e), p in zip(entries, probs)]


def compute_predictions(examples: Sequence[SquadExample], features: Sequence[SquadFeature],
                        start_logits: np.ndarray | Sequence[Sequence[float]],
                        end_logits: np.ndarray | Sequence[Sequence[float]], n_best_size: int = 20,
                        max_answer_length: int = 30, version_2: bool = False,
                        null_threshold: float = 0.0) -> SquadPredictions:
    """Answers from the model's logits: start_logits/end_logits (F, T) or F rows (each at least
    as long as its feature; padding beyond it is ignored), in the order of `features`.

    v1.1: the best n-best text. v2.0: "" when null odds (min over windows of start[0] + end[0],
    minus the best non-null span's score) > null_threshold, else the best non-null text.
    """
    if n_best_size < 1 or max_answer_length < 1:
        raise BertkitError("n_best_size and max_answer_length must be at least 1")
    starts = _as_rows(start_logits, len(features), "start_logits")
    ends = _as_rows(end_logits, len(features), "end_logits")
    by_example: dict[int, list[int]] = defaultdict(list)
    for i, feature in enumerate(features):
        by_example[feature.example_index].append(i)
    out = SquadPredictions({}, {}, {} if version_2 else None, {} if version_2 else None, null_threshold)
    for index, example in enumerate(examples):
        ids = by_example.get(index, [])
        feats = [features[i] for i in ids]
        found = [c for j, i in enumerate(ids)
                 for c in _candidates(features[i], j, starts[i], ends[i], n_best_size, max_answer_length)]
        null = _min_null(ids, starts, ends) if version_2 else None
        nbest = _nbest(example, feats, found, [starts[i] for i in ids], [ends[i] for i in ids], null, n_best_size)
        _record(out, example.qas_id, nbest, null, null_threshold)
    return out


def _min_null(ids: list[int], starts: list[np.ndarray], ends: list[np.ndarray]) -> tuple[float, float, float]:
    """(score, start logit, end logit) of [CLS] in the window where start[0] + end[0] is smallest."""
    if not ids:
        return 0.0, 0.0, 0.0
    best = min(ids, key=lambda i: starts[i][0] + ends[i][0])  # first of equal minima, as Google's strict <
    return float(starts[best][0] + ends[best][0]), float(starts[best][0]), float(ends[best][0])


def _record(out: SquadPredictions, qas_id: str, nbest: list[dict[str, Any]],
            null: tuple[float, float, float] | None, threshold: float) -> None:
    out.nbest[qas_id] = nbest
    if null is None:
        out.predictions[qas_id] = nbest[0]["text"]
        return
    best = next((e for e in nbest if e["text"]), None)
    odds = NO_SPAN_ODDS if best is None else null[0] - best["start_logit"] - best["end_logit"]
    out.null_odds[qas_id] = odds  # type: ignore[index]
    out.best_span[qas_id] = "" if best is None else best["text"]  # type: ignore[index]
    out.predictions[qas_id] = "" if odds > threshold or best is None else best["text"]


def evaluate_predictions(dataset_json: Mapping[str, Any], predictions: SquadPredictions) -> tuple[SquadPredictions, dict[str, float]]:
    """Score predictions against the dataset they answer. v2.0: search the best null threshold on
    this set (the official find_best_thresh over the best non-null answers and the null odds, so
    that any question may end up answered or not), re-make the predictions at that threshold (so
    that they score best_f1; -inf, all unanswered, where the official script says 0.0), and return
    them with their scores (exact, f1, HasAns_/NoAns_ ...) plus the official best_exact,
    best_exact_thresh, best_f1, best_f1_thresh. v1.1: the predictions unchanged and {exact, f1, total}."""
    if predictions.null_odds is None:
        return predictions, evaluate_squad(dataset_json, predictions.predictions)
    always_answer = predictions.at_threshold(math.inf)  # so that the search may answer any question
    search = evaluate_squad(dataset_json, always_answer.predictions, predictions.null_odds)
    threshold = rewrite_threshold(dataset_json, always_answer.predictions, predictions.null_odds)
    final = predictions.at_threshold(threshold)
    scores = evaluate_squad(dataset_json, final.predictions)
    scores.update({k: search[k] for k in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")})
    return final, scores


def write_predictions(out_dir: str | Path, predictions: SquadPredictions) -> list[Path]:
    """Write predictions.json, nbest_predictions.json and (v2.0) null_odds.json into out_dir, as
    Google's run_squad.py writes them (JSON, indent 4); returns the paths."""
    out_dir = Path(out_dir)
    files = {"predictions.json": predictions.predictions, "nbest_predictions.json": predictions.nbest}
    if predictions.null_odds is not None:
        files["null_odds.json"] = predictions.null_odds
    for name, content in files.items():
        with atomic_open(out_dir / name) as f:
            f.write(json.dumps(content, indent=4, ensure_ascii=False) + "\n")
    return [out_dir / name for name in files]
