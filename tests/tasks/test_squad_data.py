"""SQuAD reading, windowed features from offsets (round trip on real dev articles), the article split."""

from __future__ import annotations

import json

import pytest
from tasks_fixtures import real_tokenizer, require_dataset, write

from bertkit.errors import BertkitError
from bertkit.tasks.squad import (SquadConfig, collate, count_questions, create_features, doc_windows, load_json,
                                 max_context_windows, read_squad, split_by_article)


@pytest.fixture(scope="module")
def dev() -> dict:
    return load_json(require_dataset("squad", "dev-v1.1.json"))


def _dataset(*qas: dict, context: str = "The cat sat on the mat in Paris.", version: str = "v2.0") -> dict:
    return {"version": version, "data": [{"title": "T", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


def _qa(qid: str, question: str, answers: list[tuple[str, int]], impossible: bool | None = None) -> dict:
    qa = {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers]}
    if impossible is not None:
        qa["is_impossible"] = impossible
    return qa


def test_real_dev_reads_completely(dev):
    data = read_squad(dev)
    assert len(data.examples) == 10570 and not data.version_2
    assert data.bad_answers == data.skipped == data.empty_contexts == 0
    assert sum(len(e.answers) for e in data.examples) == 34726
    assert data.examples[0].title == "Super_Bowl_50"


def test_bad_offsets_are_dropped_and_counted():
    dataset = _dataset(
        _qa("ok", "Where?", [("Paris", 26)]),
        _qa("shifted", "Who?", [("cat", 5), ("cat", 4)]),  # first answer's offset is wrong
        _qa("none", "What?", [], impossible=True),
    )
    train = read_squad(dataset, training=True)
    assert [e.qas_id for e in train.examples] == ["ok", "none"]
    assert (train.bad_answers, train.skipped) == (1, 1)
    assert train.version_2 and train.examples[1].is_impossible
    predict = read_squad(dataset)  # prediction keeps every question, with its good answers
    assert [len(e.answers) for e in predict.examples] == [1, 1, 0]


def test_empty_context_and_long_question():
    tok = real_tokenizer()
    dataset = _dataset(_qa("q", "what " * 100 + "is it?", []), context="   ")
    assert read_squad(dataset, training=True).empty_contexts == 1
    data = read_squad(dataset)
    assert data.empty_contexts == 1 and len(data.examples) == 1
    [feature] = create_features(tok, data.examples, SquadConfig(max_seq_length=64, max_query_length=10))
    assert feature.encoding.tokens == ["[CLS]"] + ["what"] * 10 + ["[SEP]", "[SEP]"]  # question cut to 10
    assert feature.context_start == len(feature.encoding.ids) - 1


def test_windows_and_max_context():
    assert doc_windows(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert doc_windows(0, 4, 3) == [(0, 0)]
    windows = doc_windows(10, 6, 2)
    assert windows == [(0, 6), (2, 6), (4, 6)]
    # piece 3: min(3, 2) in window 0, min(1, 4) in 1: window 0; pieces 4, 5: window 1 (2 > 1, 3 > 1)
    assert max_context_windows(windows).tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert max_context_windows([(0, 0)]).tolist() == []


def test_positions_impossible_and_outside_window():
    tok = real_tokenizer()
    context = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    dataset = _dataset(_qa("a", "which?", [("kappa lambda", context.index("kappa"))]),
                       _qa("b", "none?", [], impossible=True), context=context)
    examples = read_squad(dataset, training=True).examples
    features = create_features(tok, examples, SquadConfig(max_seq_length=12, doc_stride=3, max_query_length=4), True)
    a = [f for f in features if f.example_index == 0]
    assert len(a) > 1 and all(len(f.encoding.ids) <= 12 for f in features)
    holding = [f for f in a if f.start_position]
    assert holding and all(f.start_position == f.end_position == 0 for f in a if f not in holding)
    for f in holding:
        o = f.encoding.offsets
        assert context[o[f.start_position][0]:o[f.end_position][1]] == "kappa lambda"
        assert f.encoding.sequence_ids[f.start_position] == 1
    assert all((f.start_position, f.end_position) == (0, 0) for f in features if f.example_index == 1)
    batch = collate(tok, features)
    assert batch["input_ids"].shape == (len(features), 12)
    assert batch["start_positions"].tolist() == [f.start_position for f in features]
    assert "start_positions" not in collate(tok, create_features(tok, examples, SquadConfig()))
    with pytest.raises(BertkitError, match="must be greater than max_query_length"):
        SquadConfig(max_seq_length=66, max_query_length=64)


def test_real_answer_round_trip(dev):
    """Every answerable question of 3 dev articles: the labelled pieces map back, through the
    offsets, to the answer text (to more than it only where the answer cuts a word)."""
    tok = real_tokenizer()
    part = {"version": dev["version"], "data": dev["data"][1:4]}
    examples = read_squad(part, training=True).examples
    features = create_features(tok, examples, SquadConfig(max_seq_length=128, doc_stride=48), training=True)
    assert len(features) > len(examples)  # long contexts are windowed
    covered, cut = set(), 0
    for f in features:
        if not f.start_position:
            continue
        e, o = examples[f.example_index], f.encoding.offsets
        answer = e.answers[0]
        text = e.context[o[f.start_position][0]:o[f.end_position][1]]
        if text != answer.text:
            end = answer.start + len(answer.text)
            assert answer.text in text
            assert e.context[answer.start - 1:answer.start + 1].isalnum() or e.context[end - 1:end + 1].isalnum()
            cut += 1
        covered.add(f.example_index)
    assert covered == set(range(len(examples)))
    assert cut < 0.01 * len(features)


def test_split_by_article(dev):
    train, held = split_by_article(dev, heldout_fraction=0.25, seed=0)
    titles = lambda d: [a["title"] for a in d["data"]]  # noqa: E731
    assert len(titles(held)) == 12 and len(titles(train)) == 36
    assert not set(titles(train)) & set(titles(held))
    assert count_questions(train) + count_questions(held) == 10570
    assert train["version"] == held["version"] == "1.1"
    assert split_by_article(dev, 0.25, seed=0) == (train, held)  # deterministic
    assert titles(split_by_article(dev, 0.25, seed=1)[1]) != titles(held)
    with pytest.raises(BertkitError, match="heldout_fraction"):
        split_by_article(dev, 1.0)


def test_unreadable_files(tmp_path):
    with pytest.raises(BertkitError, match="not JSON"):
        load_json(write(tmp_path / "a.json", "{"))
    with pytest.raises(BertkitError, match="expected an object with a 'data' list"):
        load_json(write(tmp_path / "b.json", "[]"))
    with pytest.raises(BertkitError, match=r"c\.json: not a SQuAD file: missing or malformed field 'qas'"):
        read_squad(write(tmp_path / "c.json", json.dumps({"data": [{"paragraphs": [{"context": "x"}]}]})))
