"""NER: CoNLL-2003 and WNUT-17 files, CLUENER JSON, first-piece labels, windows, write-back, seqeval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tasks_fixtures import real_tokenizer, require_dataset, write

from bertkit.errors import BertkitError
from bertkit.tasks import ner

# (folder, split, sentences, tokens, entities) from shared/datasets/README.md
COUNTS = [
    ("conll2003", "train", 14041, 203621, 23499), ("conll2003", "dev", 3250, 51362, 5942),
    ("conll2003", "test", 3453, 46435, 5648), ("wnut17", "train", 3394, 62730, 1975),
    ("wnut17", "dev", 1009, 15733, 836), ("wnut17", "test", 1287, 23394, 1079),
]


@pytest.mark.parametrize(("folder", "split", "sentences", "tokens", "entities"), COUNTS)
def test_real_counts(folder, split, sentences, tokens, entities):
    path = ner.find_split_files(require_dataset(folder))[split]
    data = ner.read_ner(path)
    assert len(data.sentences) == sentences
    assert sum(len(s.words) for s in data.sentences) == tokens
    assert sum(t.startswith("B-") for s in data.sentences for t in s.labels) == entities
    assert all(w != "-DOCSTART-" for s in data.sentences for w in s.words)


def test_real_label_lists_and_byte_exact_write_back(tmp_path):
    conll = ner.find_split_files(require_dataset("conll2003"))
    labels = ner.label_list(ner.read_ner(conll["train"]).sentences)
    assert labels == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    wnut = ner.find_split_files(require_dataset("wnut17"))
    assert len(ner.label_list(ner.read_ner(wnut["train"]).sentences)) == 13  # O + B/I of 6 types
    for path in (conll["dev"], wnut["train"]):  # wnut17train.conll has whitespace-only separators
        data = ner.read_ner(path)
        out = ner.write_predictions(tmp_path / path.name, data, [s.labels for s in data.sentences])
        assert out.read_bytes() == path.read_bytes()


def test_first_piece_labels_and_prediction_round_trip():
    tok = real_tokenizer()
    data = ner.NerData(Path("x.txt"), "conll", [
        ner.NerSentence(["Johanson", "visited", "Washington"], ["B-PER", "O", "B-LOC"], [1, 2, 3])])
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    [feature] = ner.create_features(tok, data, labels, max_seq_length=16)
    assert feature.encoding.tokens == ["[CLS]", "johan", "##son", "visited", "washington", "[SEP]"]
    assert feature.labels == [ner.IGNORE, 3, ner.IGNORE, 0, 1, ner.IGNORE]
    predicted = [[0, 3, 4, 0, 1, 0]]  # the second piece's tag is not read
    assert ner.predict_tags(data, [feature], predicted, labels) == [["B-PER", "O", "B-LOC"]]
    batch = ner.collate(tok, [feature, ner.create_features(tok, data, labels, max_seq_length=4)[0]])
    assert batch["labels"].tolist() == [feature.labels, [ner.IGNORE, 3, ner.IGNORE, ner.IGNORE, ner.IGNORE, ner.IGNORE]]
    unlabelled = ner.create_features(tok, data, None)
    assert all(x == ner.IGNORE for x in unlabelled[0].labels)


def test_long_sentences_become_windows_of_whole_words():
    tok = real_tokenizer()
    words = ["Johanson", "visited", "Washington", "and", "Ouagadougou"] * 6
    tags = ["B-PER", "O", "B-LOC", "O", "B-LOC"] * 6
    data = ner.NerData(Path("x.txt"), "conll", [ner.NerSentence(words, tags, list(range(1, 31)))])
    labels = ["O", "B-LOC", "B-PER"]
    features = ner.create_features(tok, data, labels, max_seq_length=10)
    assert len(features) > 3 and all(len(f.encoding.ids) <= 10 for f in features)
    firsts = [w for f in features for w, first in zip(f.encoding.word_ids, ner.first_piece_mask(f.encoding.word_ids))
              if first]
    assert firsts == list(range(30))  # each word once, in order, never split across windows
    gold_ids = [[max(x, 0) for x in f.labels] for f in features]
    assert ner.predict_tags(data, features, gold_ids, labels) == [tags]


def test_conll_errors(tmp_path):
    bad = write(tmp_path / "bad.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    with pytest.raises(BertkitError, match=r"bad\.txt: line 2: expected 4 columns, found 3"):
        ner.read_ner(bad)
    train = write(tmp_path / "train.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n\n")
    dev = write(tmp_path / "dev.txt", "Bonn NNP B-NP B-LOC\n")
    labels = ner.label_list(ner.read_ner(train).sentences)
    assert labels == ["O", "B-ORG"]
    with pytest.raises(BertkitError, match=r"dev\.txt: line 1: tag 'B-LOC' is not one of the training tags"):
        ner.create_features(real_tokenizer(), ner.read_ner(dev), labels)
    with pytest.raises(BertkitError, match="no tokens"):
        ner.read_ner(write(tmp_path / "empty.txt", "\n \n"))
    with pytest.raises(BertkitError, match="unknown NER format"):
        ner.read_ner(dev, "iob")
    with pytest.raises(BertkitError, match="no conll files here"):
        ner.find_split_files(tmp_path / "nothing")


def test_unlabelled_conll_gets_a_column(tmp_path):
    path = write(tmp_path / "test.txt", "Bonn\nis\n\nOK\n")
    data = ner.read_ner(path)
    assert [s.labels for s in data.sentences] == [None, None]
    out = ner.write_predictions(tmp_path / "out.txt", data, [["B-LOC", "O"], ["O"]])
    assert out.read_text() == "Bonn B-LOC\nis O\n\nOK O\n"


def test_cluener(tmp_path):
    rows = [{"text": "浙商银行企业信贷部叶老桂博士", "label": {"name": {"叶老桂": [[9, 11]]},
                                                      "company": {"浙商银行": [[0, 3]], "商银": [[1, 2]]}}},
            {"id": 7, "text": "Jay Chou唱歌"}]
    path = write(tmp_path / "dev.json", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    data = ner.read_ner(path, "cluener")
    assert data.overlapping_spans == 1  # 商银 inside 浙商银行
    assert data.sentences[0].labels[:5] == ["B-company", "I-company", "I-company", "I-company", "O"]
    assert data.sentences[0].labels[9:12] == ["B-name", "I-name", "I-name"] and data.sentences[1].labels is None
    tags = [data.sentences[0].labels, ["B-name", "I-name", "I-name", "I-name", "I-name", "I-name", "I-name", "I-name", "O", "O"]]
    out = ner.write_predictions(tmp_path / "pred.json", data, tags)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert written[0]["label"] == {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[9, 11]]}}
    assert written[1] == {"id": 7, "text": "Jay Chou唱歌", "label": {"name": {"Jay Chou": [[0, 7]]}}}
    bad = write(tmp_path / "bad.json", json.dumps({"text": "abc", "label": {"x": {"ab": [[1, 2]]}}}) + "\n")
    with pytest.raises(BertkitError, match=r"bad\.json: line 1: span \[1, 2\] of x 'ab' does not match"):
        ner.read_ner(bad, "cluener")


def test_unpieced_words_continue_their_entity():
    tok = real_tokenizer()
    data = ner.NerData(Path("x.json"), "cluener", [ner.NerSentence(list("Jay Chou"), None, [1] * 8)])
    labels = ["O", "B-name", "I-name"]
    features = ner.create_features(tok, data, None)
    assert 3 not in features[0].encoding.word_ids  # the space has no pieces
    predicted = [[0 if w is None else (1 if w == 0 else 2) for w in features[0].encoding.word_ids]]
    assert ner.predict_tags(data, features, predicted, labels) == [["B-name"] + ["I-name"] * 7]


def test_seqeval_metrics():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    m = ner.ner_metrics(gold, pred)
    # entities: gold PER, LOC, ORG; predicted PER, ORG, LOC(wrong place): 2 right of 3 and 3
    assert (m["precision"], m["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_type"]["PER"]["f1"] == 1.0
    with pytest.raises(BertkitError, match="differ in number"):
        ner.ner_metrics(gold, pred[:1])
