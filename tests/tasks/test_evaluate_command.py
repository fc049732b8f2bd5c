"""``bertkit evaluate squad|nq``: arguments, the printed JSON, bad files."""

from __future__ import annotations

import argparse
import json

import pytest
from tasks_fixtures import require_dataset, write

from bertkit.errors import BertkitError
from bertkit.tasks.commands import add_evaluate_command


def _run(capsys, *args: object) -> dict:
    parser = argparse.ArgumentParser(prog="bertkit")
    add_evaluate_command(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args([str(a) for a in args])
    ns.func(ns)
    return json.loads(capsys.readouterr().out)


def _v2(tmp_path):
    data = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "Paris is big.", "qas": [
        {"id": "a", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}], "is_impossible": False},
        {"id": "b", "question": "?", "answers": [], "is_impossible": True}]}]}]}
    return write(tmp_path / "dev-v2.json", json.dumps(data))


def test_squad_v2_with_na_probs(tmp_path, capsys):
    data = _v2(tmp_path)
    predictions = write(tmp_path / "predictions.json", json.dumps({"a": "Paris", "b": "big"}))
    odds = write(tmp_path / "null_odds.json", json.dumps({"a": -3.0, "b": 2}))
    scores = _run(capsys, "evaluate", "squad", data, predictions, "--na-prob-file", odds)
    assert scores["exact"] == 100.0 and scores["best_f1"] == 100.0 and scores["best_f1_thresh"] == -3.0
    assert _run(capsys, "evaluate", "squad", data, predictions)["exact"] == 50.0


def test_squad_v1_real_dev(tmp_path, capsys):
    dev = require_dataset("squad", "dev-v1.1.json")
    gold = {qa["id"]: qa["answers"][0]["text"] for a in json.loads(dev.read_text())["data"]
            for p in a["paragraphs"] for qa in p["qas"]}
    predictions = write(tmp_path / "predictions.json", json.dumps(gold))
    assert _run(capsys, "evaluate", "squad", dev, predictions) == {"exact": 100.0, "f1": 100.0, "total": 10570}


def test_bad_files(tmp_path, capsys):
    data = _v2(tmp_path)
    with pytest.raises(BertkitError, match="mapping question ids to text"):
        _run(capsys, "evaluate", "squad", data, write(tmp_path / "p.json", json.dumps(["Paris"])))
    predictions = write(tmp_path / "predictions.json", json.dumps({"a": "Paris", "b": ""}))
    with pytest.raises(BertkitError, match=r"na\.json: expected a JSON object mapping question ids to a number"):
        _run(capsys, "evaluate", "squad", data, predictions, "--na-prob-file", write(tmp_path / "na.json", '{"a": "x"}'))
    with pytest.raises(BertkitError, match="not JSON"):
        _run(capsys, "evaluate", "squad", data, write(tmp_path / "broken.json", "{"))
    with pytest.raises(BertkitError, match="cannot read"):
        _run(capsys, "evaluate", "squad", data, tmp_path / "missing.json")


def test_nq(tmp_path, capsys):
    record = {"example_id": 5, "question_text": "q", "document_text": "<P> a b </P>",
              "long_answer_candidates": [{"start_token": 0, "end_token": 4, "top_level": True}],
              "annotations": [{"long_answer": {"start_token": 0, "end_token": 4, "candidate_index": 0},
                               "short_answers": [{"start_token": 1, "end_token": 2}], "yes_no_answer": "NONE"}] * 2}
    gold = write(tmp_path / "gold.jsonl", json.dumps(record) + "\n")
    span = {"start_token": 1, "end_token": 2, "start_byte": -1, "end_byte": -1}
    prediction = {"example_id": 5, "long_answer": {**span, "start_token": 0, "end_token": 4}, "long_answer_score": 2.0,
                  "short_answers": [span], "short_answers_score": 2.0, "yes_no_answer": "NONE"}
    predictions = write(tmp_path / "predictions.json", json.dumps({"predictions": [prediction]}))
    scores = _run(capsys, "evaluate", "nq", gold, predictions)
    assert scores["long-answer-f1"] == scores["short-answer-f1"] == scores["long-best-threshold-f1"] == 1.0
