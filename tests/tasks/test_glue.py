"""GLUE readers on the real files, their bad-input errors, encodings and the prediction files."""

from __future__ import annotations

import numpy as np
import pytest
from tasks_fixtures import real_tokenizer, require_dataset, write

from bertkit.errors import BertkitError
from bertkit.tasks import glue
from bertkit.tasks.classification import (Example, check_head_labels, collate, encode_examples, infer_label_list,
                                          label_ids, softmax, write_test_results)

# (task, split, rows, most common label and its count) from shared/datasets/README.md
COUNTS = [
    ("cola", "train", 8551, ("1", 6023)), ("cola", "dev", 1043, None),
    ("sst2", "dev", 872, ("1", 444)), ("mrpc", "train", 3668, ("1", 2474)), ("mrpc", "dev", 408, ("1", 279)),
    ("stsb", "dev", 1500, None), ("rte", "train", 2490, None), ("rte", "dev", 277, None),
    ("qnli", "dev", 5463, None), ("wnli", "train", 635, None), ("wnli", "dev", 71, None),
]


@pytest.mark.parametrize(("task", "split", "rows", "top"), COUNTS)
def test_real_counts_and_labels(task, split, rows, top):
    folder = require_dataset("glue", glue.glue_task(task).folder)
    examples = glue.read_glue(task, folder, split)
    assert len(examples) == rows
    labels = glue.glue_task(task).labels
    if labels is None:
        assert all(0.0 <= e.label <= 5.0 for e in examples)
    else:
        assert {e.label for e in examples} == set(labels)
    if top:
        assert sum(e.label == top[0] for e in examples) == top[1]


def test_real_pitfalls():
    cola = glue.read_glue("cola", require_dataset("glue", "CoLA"), "train")
    # no header: the first row is an example, not a header
    assert cola[0].text_a == "Our friends won't buy this analysis, let alone the next one we propose."
    assert cola[0].label == "1" and cola[0].where.endswith("train.tsv:1")
    mrpc = glue.read_glue("mrpc", require_dataset("glue", "MRPC"), "dev")  # starts with a BOM
    assert mrpc[0].label == "1" and mrpc[0].text_a.startswith("He said the foodservice pie")
    assert mrpc[0].text_b.startswith('" The foodservice pie')
    stsb = glue.read_glue("stsb", require_dataset("glue", "STS-B"), "dev")
    assert stsb[0].label == 5.0 and stsb[0].text_b == "A man wearing a hard hat is dancing."


def test_real_test_sets_and_submission(tmp_path):
    folder = require_dataset("glue", "RTE")
    test = glue.read_glue_test("rte", folder)["test"]
    assert len(test) == 3000 and test[0].guid == "0" and test[0].label is None
    path = glue.write_submission(tmp_path, "rte", "test", test, np.arange(3000) % 2)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert path.name == "RTE.tsv" and lines[:3] == ["index\tprediction", "0\tentailment", "1\tnot_entailment"]
    assert len(lines) == 3001
    ax = glue.read_glue_test("ax", require_dataset("glue", "diagnostic"))["test"]
    assert len(ax) == 1104 and ax[0].text_b == "The cat did not sit on the mat."
    assert glue.write_submission(tmp_path, "ax", "test", ax, np.zeros(1104)).name == "AX.tsv"


def test_mnli_layout(tmp_path):
    header = "\t".join(f"c{i}" for i in range(11)) + "\tgold_label\n"
    row = "\t".join(["0"] * 8 + ["A premise.", "A hypothesis.", "x"]) + "\tneutral\n"
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        write(tmp_path / name, header + row)
    test_header = "\t".join(f"c{i}" for i in range(10)) + "\n"
    test_row = "\t".join(["7"] + ["0"] * 7 + ["P.", "H."]) + "\n"
    for name in ("test_matched.tsv", "test_mismatched.tsv"):
        write(tmp_path / name, test_header + test_row)
    assert glue.dev_splits("mnli") == ["dev_matched", "dev_mismatched"]
    dev = glue.read_glue("MNLI", tmp_path, "dev_mismatched")
    assert dev == [Example("dev_mismatched-0", "A premise.", "A hypothesis.", "neutral", f"{tmp_path}/dev_mismatched.tsv:2")]
    tests = glue.read_glue_test("mnli", tmp_path)
    assert list(tests) == ["test_matched", "test_mismatched"] and tests["test_matched"][0].guid == "7"
    paths = [glue.write_submission(tmp_path / "out", "mnli", s, tests[s], [2]) for s in tests]
    assert [p.name for p in paths] == ["MNLI-m.tsv", "MNLI-mm.tsv"]
    assert paths[0].read_text() == "index\tprediction\n7\tneutral\n"


def test_qqp_layout(tmp_path):
    write(tmp_path / "dev.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n9\t1\t2\tWhy?\tHow?\t0\n")
    write(tmp_path / "test.tsv", "id\tquestion1\tquestion2\n4\tWho?\tWhom?\n")
    [dev] = glue.read_glue("qqp", tmp_path, "dev")
    assert (dev.text_a, dev.text_b, dev.label) == ("Why?", "How?", "0")
    [test] = glue.read_glue_test("qqp", tmp_path)["test"]
    assert (test.guid, test.text_a, test.text_b) == ("4", "Who?", "Whom?")
    assert glue.write_submission(tmp_path, "qqp", "test", [test], [1]).read_text() == "index\tprediction\n4\t1\n"


def test_bad_rows_name_file_and_line(tmp_path):
    write(tmp_path / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(BertkitError, match=r"train\.tsv: line 3: expected 4 tab-separated columns, found 3"):
        glue.read_glue("rte", tmp_path, "train")
    write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tcontradiction\n")
    with pytest.raises(BertkitError, match=r"dev\.tsv:2: dev label 'contradiction' is not one of rte's labels"):
        glue.read_glue("rte", tmp_path, "dev")
    write(tmp_path / "train.tsv", "src\t1\t\tok\nsrc\t0\n")  # CoLA: headerless, 4 columns
    with pytest.raises(BertkitError, match=r"line 2: expected 4 tab-separated columns, found 2"):
        glue.read_glue("cola", tmp_path, "train")
    write(tmp_path / "dev.tsv", "a\tb\tc\td\te\tf\tg\ts1\ts2\tscore\n0\t\t\t\t\t\t\tx\ty\thigh\n")
    with pytest.raises(BertkitError, match=r"dev\.tsv:2: dev score 'high' is not a number"):
        glue.read_glue("stsb", tmp_path, "dev")
    write(tmp_path / "dev.tsv", b"")
    with pytest.raises(BertkitError, match="empty file"):
        glue.read_glue("sst2", tmp_path, "dev")
    write(tmp_path / "dev.tsv", b"sentence\tlabel\n\xff\t1\n")
    with pytest.raises(BertkitError, match="not UTF-8"):
        glue.read_glue("sst2", tmp_path, "dev")
    with pytest.raises(BertkitError, match="no such file"):
        glue.read_glue("qqp", tmp_path / "QQP", "dev")
    with pytest.raises(BertkitError, match="unknown GLUE task 'squad'"):
        glue.glue_task("squad")
    with pytest.raises(BertkitError, match="has no split 'dev'"):
        glue.read_glue("mnli", tmp_path, "dev")


def test_labels_and_unseen_dev_label():
    train = [Example("t-0", "a", label="pos"), Example("t-1", "b", label="neg")]
    labels = infer_label_list(train)
    assert labels == ["neg", "pos"]
    assert label_ids(train, labels, "train").tolist() == [1, 0]
    dev = [Example("d-0", "c", label="neutral", where="dev.csv:2")]
    with pytest.raises(BertkitError, match=r"dev\.csv:2: dev label 'neutral' is not one of the training labels \['neg', 'pos'\]"):
        label_ids(dev, labels, "dev")
    scores = [Example("t-0", "a", label="5.000"), Example("t-1", "b", label="1")]
    assert infer_label_list(scores) is None  # numbers with a fraction: regression
    assert label_ids(scores, None, "train").tolist() == [5.0, 1.0]
    assert infer_label_list([Example("t-0", "a", label="0"), Example("t-1", "b", label="1")]) == ["0", "1"]
    with pytest.raises(BertkitError, match="is not a number"):
        label_ids([Example("d-0", "a", label="high")], None, "dev")


def test_encode_examples_truncates_like_google():
    tok = real_tokenizer()
    examples = [Example("t-0", "the cat sat on the mat " * 20, "a dog", "1"), Example("t-1", "hello", None, "0")]
    data = encode_examples(tok, examples, 16, ["0", "1"], "train")
    assert [len(e.ids) for e in data.encodings] == [16, 3]
    assert data.encodings[0].tokens[-3:] == ["a", "dog", "[SEP]"]  # the longer side is cut
    assert data.labels.tolist() == [1, 0]
    batch = collate(tok, data, [1, 0])
    assert batch["input_ids"].shape == (2, 16) and batch["labels"].tolist() == [0, 1]
    assert batch["attention_mask"][0].sum() == 3
    assert encode_examples(tok, examples, 16, None, "test", labelled=False).labels is None


def test_head_must_fit_the_labels():
    check_head_labels(["0", "1"], ["0", "1"], "m")
    check_head_labels(1, None, "m")
    with pytest.raises(BertkitError, match=r"m: its head has 2 outputs, the data needs 3"):
        check_head_labels(2, ["a", "b", "c"], "m")
    with pytest.raises(BertkitError, match=r"its head predicts \['1', '0'\], the data has \['0', '1'\]"):
        check_head_labels(["1", "0"], ["0", "1"], "m")
    with pytest.raises(BertkitError, match="the data has a regression target"):
        check_head_labels(["0", "1"], None, "m")


def test_test_results_tsv(tmp_path):
    probs = softmax(np.array([[0.0, 0.0], [2.0, 0.0]]))
    path = write_test_results(tmp_path / "test_results.tsv", probs)
    rows = [list(map(float, line.split("\t"))) for line in path.read_text().splitlines()]
    assert rows[0] == [0.5, 0.5] and rows[1] == pytest.approx([0.8807970779778823, 0.11920292202211769])
    write_test_results(tmp_path / "regression.tsv", np.array([1.5, 2.0]))
    assert (tmp_path / "regression.tsv").read_text() == "1.5\n2.0\n"


def test_submission_errors_and_stsb(tmp_path):
    examples = [Example("0", "a"), Example("1", "b")]
    path = glue.write_submission(tmp_path, "stsb", "test", examples, [5.7, 2.25])
    assert path.read_text() == "index\tprediction\n0\t5.000\n1\t2.250\n"
    with pytest.raises(BertkitError, match="3 predictions for 2"):
        glue.write_submission(tmp_path, "cola", "test", examples, [0, 1, 1])
    with pytest.raises(BertkitError, match="no test split 'test_matched'"):
        glue.write_submission(tmp_path, "cola", "test_matched", examples, [0, 1])
