"""Natural Questions on small NQ-format files written here: reading, BERT-joint examples and features,
predictions from logits, and the official metrics with the 2-of-5 annotator rule."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from tasks_fixtures import real_tokenizer, write

from bertkit.errors import BertkitError
from bertkit.tasks import nq
from bertkit.tasks.nq import AnswerType, NqConfig
from bertkit.tasks.nq_eval import evaluate_nq, read_nq_gold, read_nq_predictions

DOCUMENT = ("<H1> Moon </H1> <P> The Moon is Earth 's only natural satellite . </P> <Table> <Tr> <Td> Mass </Td> "
            "<Td> 7.3 kg </Td> </Tr> </Table> <P> Is it made of cheese ? No . </P>")
EARTH, SATELLITE = (7, 8), (9, 12)  # token spans in DOCUMENT.split(" ")
CANDIDATES = [{"start_token": 3, "end_token": 14, "top_level": True}, {"start_token": 14, "end_token": 25, "top_level": True},
              {"start_token": 15, "end_token": 24, "top_level": False}, {"start_token": 25, "end_token": 35, "top_level": True}]
NULL = {"start_token": -1, "end_token": -1, "candidate_index": -1}


def _annotation(candidate: int | None, shorts=(), yes_no="NONE") -> dict:
    long = NULL if candidate is None else {**{k: CANDIDATES[candidate][k] for k in ("start_token", "end_token")},
                                           "candidate_index": candidate}
    return {"long_answer": long, "short_answers": [{"start_token": s, "end_token": e} for s, e in shorts],
            "yes_no_answer": yes_no}


def _record(example_id: int, question: str, annotations: list[dict], candidates=CANDIDATES) -> dict:
    return {"example_id": example_id, "question_text": question, "document_text": DOCUMENT,
            "document_url": "https://en.wikipedia.org/wiki/Moon", "long_answer_candidates": candidates,
            "annotations": annotations}


RECORDS = [
    _record(1, "what is the moon", [_annotation(0, [EARTH]), _annotation(0, [EARTH]), _annotation(0),
                                    _annotation(None), _annotation(0, [SATELLITE])]),
    _record(2, "is the moon made of cheese", [_annotation(3, yes_no="NO")] * 2 + [_annotation(None)] * 3),
    _record(3, "who wrote hamlet", [_annotation(None)] * 4 + [_annotation(0)], candidates=[]),
]


@pytest.fixture
def nq_file(tmp_path):
    path = tmp_path / "nq-dev.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    return path


def test_read_and_examples(nq_file):
    entries = nq.read_nq(nq_file)
    assert [e.example_id for e in entries] == [1, 2, 3]
    assert entries[0].tokens[7] == "Earth" and entries[0].is_html[3] and not entries[0].is_html[4]
    ex = nq.create_example(entries[0], training=True)
    assert ex.words[:5] == ["[ContextId=-1]", "[NoLongAnswer]", "[ContextId=0]", "[Paragraph=1]", "The"]
    assert "[Table=1]" in ex.words and "[ContextId=2]" not in ex.words  # the nested <Tr> is skipped
    assert ex.words[ex.words.index("[ContextId=3]") + 1] == "[Paragraph=2]"
    assert "<Td>" not in ex.words and ex.word_to_token[ex.words.index("Mass")] == 17
    assert ex.answer_type == AnswerType.SHORT and ex.words[ex.answer_words[0]] == "Earth"
    assert ex.answer_words[0] == ex.answer_words[1]
    no = nq.create_example(entries[1], training=True)
    assert no.answer_type == AnswerType.NO and no.words[no.answer_words[0]] == "Is"
    assert nq.create_example(entries[2], training=True) is None  # its annotated candidate is not in the file
    unknown = nq._entry(_record(4, "who wrote hamlet", [_annotation(None)] * 5))
    assert nq.create_example(unknown, training=True).answer_type == AnswerType.UNKNOWN
    assert nq.create_example(entries[1], training=True, max_contexts=2) is None  # its candidate is cut off
    assert nq.create_example(entries[1], max_contexts=2).answer_type is None  # prediction: no labels


def test_markers_use_unused_tokens():
    tok = real_tokenizer()
    ids = nq.marker_ids(tok)
    assert ids["[Q]"] == tok.vocab["[unused0]"] and ids["[NoLongAnswer]"] == tok.vocab["[unused1]"]
    assert len(set(ids.values())) == len(ids) == 2 + 4 * 50 + 49
    assert all(tok.convert_ids_to_tokens([i])[0].startswith("[unused") for i in ids.values())


def test_training_features(nq_file):
    tok = real_tokenizer()
    entries = nq.read_nq(nq_file)[:2] + [nq._entry(_record(4, "who wrote hamlet", [_annotation(None)] * 5))]
    examples = [nq.create_example(e, training=True) for e in entries]
    config = NqConfig(max_seq_length=24, doc_stride=8, max_query_length=6)
    features = nq.create_features(tok, examples, config, training=True)
    assert features and all(len(f.encoding.ids) <= 24 for f in features)
    assert {f.example_index for f in features} == {0, 1}  # windows without the answer, and UNKNOWN, dropped
    short = [f for f in features if f.example_index == 0]
    for f in short:
        assert f.answer_type == AnswerType.SHORT
        assert f.encoding.tokens[f.start_position] == "earth" == f.encoding.tokens[f.end_position]
        assert f.token_map[f.start_position] == 7
    f = short[0]
    assert f.encoding.tokens[:2] == ["[CLS]", "[unused0]"]  # [Q] starts the query
    assert all(f.token_map[i] == -1 for i, t in enumerate(f.encoding.tokens) if t.startswith("[unused"))
    batch = nq.collate(tok, features)
    assert batch["input_ids"].shape[0] == len(features)
    assert batch["answer_types"].tolist() == [int(f.answer_type) for f in features]
    kept = nq.create_features(tok, examples, NqConfig(24, 8, 6, include_unknowns=1.0), training=True)
    unknown = [f for f in kept if f.answer_type == AnswerType.UNKNOWN]
    assert {f.example_index for f in unknown} >= {2} and all(f.start_position == f.end_position == 0 for f in unknown)
    long_question = nq.create_features(tok, examples[:1], NqConfig(64, 16, max_query_length=4))
    assert long_question[0].encoding.tokens[:6] == ["[CLS]", "what", "is", "the", "moon", "[SEP]"]  # the last 4


def test_predictions_and_official_metrics(nq_file, tmp_path):
    tok = real_tokenizer()
    examples = [nq.create_example(e) for e in nq.read_nq(nq_file)]
    features = nq.create_features(tok, examples, NqConfig(max_seq_length=64, doc_stride=32, max_query_length=16))
    assert len({f.example_index for f in features}) == 3
    start, end = np.zeros((len(features), 64)), np.zeros((len(features), 64))
    types = np.zeros((len(features), 5))
    for i, f in enumerate(features):
        for j, token in enumerate(f.encoding.tokens):
            if f.example_index == 0 and token == "earth":
                start[i, j] = end[i, j] = 5.0
            if f.example_index == 1 and token == "no":
                start[i, j] = end[i, j] = 3.0
        types[i, AnswerType.NO if f.example_index == 1 else AnswerType.SHORT] = 1.0
    predictions = nq.compute_predictions(examples, features, start, end, types)
    first, second, third = predictions
    assert first["short_answers"] == [{"start_token": 7, "end_token": 8, "start_byte": -1, "end_byte": -1}]
    assert first["long_answer"]["start_token"] == 3 and first["long_answer_score"] == 10.0
    assert second["yes_no_answer"] == "NO" and second["short_answers"] == []
    assert second["long_answer"]["start_token"] == 25
    assert third["long_answer"]["start_token"] == -1 and third["short_answers"] == []  # only markers: no span
    write(tmp_path / "predictions.json", json.dumps({"predictions": predictions}))
    scores = evaluate_nq(read_nq_gold(nq_file), read_nq_predictions(tmp_path / "predictions.json"))
    # gold: 1 and 2 have long answers (4 and 2 of 5 annotators), 3 has one annotator only: no gold
    assert scores["long-answer-f1"] == scores["short-answer-f1"] == 1.0 and scores["long-answer-n"] == 3


def _prediction(example_id, long=None, shorts=(), yes_no="NONE", score=1.0):
    span = lambda s, e: {"start_token": s, "end_token": e, "start_byte": -1, "end_byte": -1}  # noqa: E731
    return {"example_id": example_id, "long_answer": span(*(long or (-1, -1))), "long_answer_score": score,
            "short_answers": [span(*s) for s in shorts], "short_answers_score": score, "yes_no_answer": yes_no}


def test_metrics_hand_computed(nq_file):
    gold = read_nq_gold(nq_file)
    preds = read_nq_predictions({"predictions": [
        _prediction(1, (3, 14), [EARTH, SATELLITE], score=1.0),  # span set of no annotator: wrong
        _prediction(2, (25, 35), yes_no="NO", score=5.0),
        _prediction(3, (3, 14), score=3.0),  # only 1 of 5 annotators: gold has no long answer
    ]})
    s = evaluate_nq(gold, preds)
    assert (s["long-answer-precision"], s["long-answer-recall"]) == (pytest.approx(2 / 3), 1.0)
    assert s["long-answer-f1"] == pytest.approx(0.8)
    assert (s["short-answer-precision"], s["short-answer-recall"], s["short-answer-f1"]) == (0.5, 0.5, 0.5)
    # short by score: 2 (5.0, right) P 1 R .5; 3 (3.0, no pred: the same); 1 (1.0, wrong) P .5 R .5
    assert s["short-best-threshold-f1"] == pytest.approx(2 / 3) and s["short-best-threshold"] == 5.0
    assert s["short-recall-at-precision>=0.75"] == 0.5
    # long by score: 2 right (P 1, R .5), 3 wrong (P .5), 1 right (P 2/3, R 1): best F1 .8 at 1.0
    assert s["long-best-threshold-f1"] == pytest.approx(0.8) and s["long-best-threshold"] == 1.0
    assert evaluate_nq(gold, {**preds, 1: read_nq_predictions({"predictions": [
        _prediction(1, (3, 14), [SATELLITE])]})[1]})["short-answer-f1"] == 1.0  # a5's set: right


def test_bad_input(nq_file, tmp_path):
    gold = read_nq_gold(nq_file)
    with pytest.raises(BertkitError, match="example ids of gold and predictions differ"):
        evaluate_nq(gold, read_nq_predictions({"predictions": [_prediction(1)]}))
    with pytest.raises(BertkitError, match="cannot have both a yes/no answer and short answers"):
        read_nq_predictions({"predictions": [_prediction(1, (3, 14), [EARTH], yes_no="YES")]})
    with pytest.raises(BertkitError, match=r"prediction 0: invalid token span \[5, 5\)"):
        read_nq_predictions({"predictions": [_prediction(1, (5, 5))]})
    bad = write(tmp_path / "bad.jsonl", json.dumps(RECORDS[0]) + "\n{\"example_id\": 4}\n")
    with pytest.raises(BertkitError, match=r"bad\.jsonl: line 2: not an NQ example"):
        nq.read_nq(bad)
    with pytest.raises(BertkitError, match=r"bad\.jsonl: line 2: bad annotation"):
        read_nq_gold(bad)
