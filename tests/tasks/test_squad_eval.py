"""SQuAD evaluation: the official definitions on hand-computed cases."""

from __future__ import annotations

import pytest

from bertkit.errors import BertkitError
from bertkit.tasks.squad_eval import evaluate_squad, exact_score, f1_score, normalize_answer


def _dataset(questions: list[tuple[str, list[str]]], version: str = "1.1") -> dict:
    qas = [{"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in answers]}
           for qid, answers in questions]
    if version == "v2.0":
        for qa in qas:
            qa["is_impossible"] = not qa["answers"]
    return {"version": version, "data": [{"title": "T", "paragraphs": [{"context": "c", "qas": qas}]}]}


@pytest.mark.parametrize(("text", "normalized"), [
    ("The  Quick, brown fox!", "quick brown fox"),
    ("An apple a day", "apple day"),
    ("theater thesis", "theater thesis"),  # articles only as whole words
    ("U.S.-led (1990s)", "usled 1990s"),
    ("  \tTHE\n end ", "end"),
    ("“Curly” quotes", "“curly” quotes"),  # only ASCII punctuation is removed
])
def test_normalize(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_and_f1():
    assert exact_score("the Denver Broncos", "Denver Broncos.") == 1
    assert f1_score("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)  # P 2/4, R 2/2
    assert f1_score("x b b", "b b b") == pytest.approx(2 / 3)  # counts clip: 2 common
    assert f1_score("a b b", "b b b") == pytest.approx(0.8)  # "a" is an article: gold "b b"
    assert f1_score("cat", "dog") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("the", "") == 1.0  # both empty after normalizing
    assert f1_score("cat", "") == 0.0


def test_v1_max_over_golds_and_missing_counts_zero():
    data = _dataset([("q1", ["Denver Broncos", "the Broncos"]), ("q2", ["1990"]), ("q3", ["x"])])
    scores = evaluate_squad(data, {"q1": "Broncos", "q2": "in 1990"})
    # q1: EM 1 (the Broncos), q2: EM 0, F1 2/3; q3 missing: 0 but counted
    assert scores == {"exact": pytest.approx(100 / 3), "f1": pytest.approx(100 * (1 + 2 / 3) / 3), "total": 3}


def test_v2_breakdown_and_best_thresholds():
    data = _dataset([("q1", ["Paris"]), ("q2", ["cat sat on mat"]), ("q3", []), ("q4", [])], "v2.0")
    predictions = {"q1": "Paris", "q2": "cat sat", "q3": "x", "q4": ""}
    plain = evaluate_squad(data, predictions)
    assert plain["exact"] == 50.0 and plain["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0 + 1) / 4)
    assert (plain["HasAns_exact"], plain["NoAns_exact"], plain["HasAns_total"]) == (50.0, 50.0, 2)
    assert "best_f1" not in plain
    na = {"q1": 0.1, "q2": 0.9, "q3": 0.5, "q4": 2.0}
    scores = evaluate_squad(data, predictions, na)
    assert scores["exact"] == 50.0  # only q4 is above the default na_prob_thresh 1.0, and it is right
    # from all-null (2 right), answering in na order: q1 +1 -> 3 (best, at 0.1), q3 -1, q2 +0, q4 +0
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (75.0, 0.1)
    assert (scores["best_f1"], scores["best_f1_thresh"]) == (75.0, 0.1)
    strict = evaluate_squad(data, predictions, na, na_prob_thresh=0.0)  # every question counted unanswered
    assert strict["exact"] == strict["NoAns_exact"] * 0.5 == 50.0 and strict["HasAns_exact"] == 0.0


def test_v2_errors():
    data = _dataset([("q1", ["Paris"]), ("q2", [])], "v2.0")
    with pytest.raises(BertkitError, match="no prediction for question 'q2'"):
        evaluate_squad(data, {"q1": "Paris"})
    with pytest.raises(BertkitError, match="no-answer probabilities lack"):
        evaluate_squad(data, {"q1": "Paris", "q2": ""}, {"q1": 0.0})
    with pytest.raises(BertkitError, match="not a SQuAD dataset"):
        evaluate_squad({"data": [{"title": "x"}]}, {})
    with pytest.raises(BertkitError, match="no questions"):
        evaluate_squad({"data": []}, {})
