"""SQuAD post-processing on synthetic logits: n-best rules, v2.0 null odds and threshold, output files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tasks_fixtures import real_tokenizer, require_dataset

from bertkit.errors import BertkitError
from bertkit.tasks.squad import SquadConfig, create_features, load_json, read_squad
from bertkit.tasks.squad_eval import evaluate_squad
from bertkit.tasks.squad_predict import (NO_SPAN_ODDS, compute_predictions, evaluate_predictions,
                                         write_predictions)

CONTEXT = "The cat sat on the mat in Paris."
# [CLS] where ? [SEP] the cat sat on the mat in paris . [SEP]
#   0     1   2   3    4   5   6   7   8   9  10   11  12  13
PARIS, DOT, THE, MAT = 11, 12, 4, 9


def _data(*qas: tuple[str, list], context: str = CONTEXT) -> dict:
    questions = [{"id": qid, "question": "Where?", "answers": [{"text": t, "answer_start": s} for t, s in answers],
                  "is_impossible": not answers} for qid, answers in qas]
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": questions}]}]}


def _setup(dataset: dict):
    examples = read_squad(dataset).examples
    features = create_features(real_tokenizer(), examples, SquadConfig())
    return examples, features


def _logits(features, spans: dict[int, list[tuple[int, float]]]) -> np.ndarray:
    out = np.zeros((len(features), 384))  # padded rows, as a model gives them
    for f, values in spans.items():
        for position, value in values:
            out[f, position] = value
    return out


def test_nbest_v1():
    examples, features = _setup(_data(("q", [("Paris", 26)])))
    assert features[0].encoding.tokens[PARIS] == "paris"
    start = _logits(features, {0: [(1, 10.0), (PARIS, 5.0), (THE, 3.0)]})  # position 1: in the question
    end = _logits(features, {0: [(PARIS, 4.0), (DOT, 2.0), (MAT, 1.0)]})
    out = compute_predictions(examples, features, start, end, n_best_size=5, max_answer_length=3)
    nbest = out.nbest["q"]
    assert out.predictions == {"q": "Paris"} and out.null_odds is None  # the context's own casing
    assert [e["text"] for e in nbest[:2]] == ["Paris", "Paris."]
    assert nbest[0]["start_logit"] == 5.0 and nbest[0]["end_logit"] == 4.0
    # only the 5 best starts (1, paris, the, then [CLS] and "?") and ends are combined: 2 valid spans
    assert len(nbest) == 2 and sum(e["probability"] for e in nbest) == pytest.approx(1.0)
    wide = compute_predictions(examples, features, start, end, n_best_size=20, max_answer_length=3).nbest["q"]
    assert len(wide) == 20 and len({e["text"] for e in wide}) == 20
    assert all(len(e["text"].split()) <= 3 for e in wide)  # max_answer_length=3 pieces: no "The cat sat ..."
    features[0].max_context[PARIS] = False  # a start outside its max-context window is not a candidate
    out = compute_predictions(examples, features, start, end, n_best_size=5, max_answer_length=3)
    assert not out.predictions["q"].startswith("Paris")
    with pytest.raises(BertkitError, match="rows of logits for 1 features"):
        compute_predictions(examples, features, start[:0], end)


def test_v2_null_odds_and_threshold(tmp_path):
    examples, features = _setup(_data(("q", [("Paris", 26)])))
    start = _logits(features, {0: [(0, 4.0), (PARIS, 5.0)]})
    end = _logits(features, {0: [(0, 4.0), (PARIS, 4.0)]})
    out = compute_predictions(examples, features, start, end, version_2=True)
    assert out.null_odds == {"q": pytest.approx(8.0 - 9.0)} and out.predictions == {"q": "Paris"}
    assert {"text": "", "probability": pytest.approx(out.nbest["q"][1]["probability"]),
            "start_logit": 4.0, "end_logit": 4.0} == out.nbest["q"][1]
    assert out.at_threshold(-2.0).predictions == {"q": ""}
    paths = write_predictions(tmp_path, out)
    assert [p.name for p in paths] == ["predictions.json", "nbest_predictions.json", "null_odds.json"]
    assert json.loads((tmp_path / "null_odds.json").read_text()) == {"q": -1.0}


def test_all_null_nbest_is_handled():
    examples, features = _setup(_data(("empty", []), context=""))
    assert len(features) == 1
    start = end = np.zeros((1, 8))
    v2 = compute_predictions(examples, features, start, end, version_2=True)
    assert v2.nbest["empty"] == [{"text": "", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0}]
    assert v2.null_odds == {"empty": NO_SPAN_ODDS} and v2.predictions == {"empty": ""}
    assert v2.at_threshold(1e9).predictions == {"empty": ""}
    v1 = compute_predictions(examples, features, start, end)
    assert v1.predictions == {"empty": ""}  # no nonce "empty" answer


def test_threshold_search_rewrites_predictions():
    dataset = _data(("has", [("Paris", 26)]), ("none", []))
    examples, features = _setup(dataset)
    # null odds: "has" 1.0 (predicted "" at threshold 0), "none" 3.0
    start = _logits(features, {0: [(0, 5.0), (PARIS, 4.5)], 1: [(0, 6.0), (PARIS, 4.5)]})
    end = _logits(features, {0: [(0, 5.0), (PARIS, 4.5)], 1: [(0, 6.0), (PARIS, 4.5)]})
    out = compute_predictions(examples, features, start, end, version_2=True)
    assert out.null_odds == {"has": 1.0, "none": 3.0} and out.predictions == {"has": "", "none": ""}
    assert evaluate_squad(dataset, out.predictions)["exact"] == 50.0
    final, scores = evaluate_predictions(dataset, out)
    assert final.predictions == {"has": "Paris", "none": ""} and final.null_threshold == 1.0
    assert scores["exact"] == scores["f1"] == scores["best_f1"] == 100.0
    assert scores["best_f1_thresh"] == 1.0 and scores["HasAns_total"] == scores["NoAns_total"] == 1


def test_all_unanswered_best_is_rewritten_as_such():
    dataset = _data(("has", [("Paris", 26)]), ("none", []))
    examples, features = _setup(dataset)
    # best spans "cat" (wrong) with odds -1 and -2: answering anything only loses
    start = _logits(features, {0: [(0, 1.0), (5, 1.5)], 1: [(0, 1.0), (5, 2.0)]})
    end = _logits(features, {0: [(0, 1.0), (5, 1.5)], 1: [(0, 1.0), (5, 2.0)]})
    out = compute_predictions(examples, features, start, end, version_2=True)
    assert out.null_odds == {"has": -1.0, "none": -2.0} and out.predictions == {"has": "cat", "none": "cat"}
    final, scores = evaluate_predictions(dataset, out)
    assert scores["best_exact"] == 50.0 and scores["best_f1_thresh"] == 0.0  # the official script's 0.0
    assert final.predictions == {"has": "", "none": ""} and scores["exact"] == 50.0  # yet all unanswered


def test_real_dev_gold_logits_score_near_100():
    """Logits that point at the gold pieces give the gold answers back (except answers that cut a word)."""
    dev = load_json(require_dataset("squad", "dev-v1.1.json"))
    part = {"version": dev["version"], "data": dev["data"][1:3]}
    tok = real_tokenizer()
    examples = read_squad(part, training=True).examples
    features = create_features(tok, examples, SquadConfig(max_seq_length=192, doc_stride=64), training=True)
    start, end = np.zeros((len(features), 192)), np.zeros((len(features), 192))
    for i, f in enumerate(features):
        start[i, f.start_position] += 10.0
        end[i, f.end_position] += 10.0
    predict_features = create_features(tok, examples, SquadConfig(max_seq_length=192, doc_stride=64))
    out = compute_predictions(examples, predict_features, start, end)
    final, scores = evaluate_predictions(part, out)
    assert final is out and scores["total"] == 359
    assert scores["exact"] > 99.0 and scores["f1"] > 99.5
