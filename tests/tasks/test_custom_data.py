"""Custom CSV / TSV / JSONL classification and regression files, and their errors."""

from __future__ import annotations

import pytest
from tasks_fixtures import write

from bertkit.errors import BertkitError
from bertkit.tasks.classification import infer_label_list, label_ids
from bertkit.tasks.custom import read_custom


def test_csv_tsv_jsonl(tmp_path):
    csv = write(tmp_path / "train.csv", '\ufeffid,text,label\n1,"Hello, world",pos\n2,"two\nlines",neg\n3,plain,pos\n')
    examples = read_custom(csv)
    assert [(e.text_a, e.label) for e in examples] == [("Hello, world", "pos"), ("two\nlines", "neg"), ("plain", "pos")]
    assert examples[2].where.endswith("train.csv:5")  # the quoted field spans lines 3-4
    tsv = write(tmp_path / "dev.tsv", "premise\thypothesis\tgold\nA.\tB.\tyes\n")
    [pair] = read_custom(tsv, label_column="gold", split="dev")
    assert (pair.guid, pair.text_a, pair.text_b, pair.label) == ("dev-0", "A.", "B.", "yes")
    jsonl = write(tmp_path / "train.jsonl", '{"q": "x", "s": "y", "score": 4.5}\n\n{"q": "z", "s": "w", "score": 1}\n')
    rows = read_custom(jsonl, text_columns=["q", "s"], label_column="score")
    assert [r.label for r in rows] == [4.5, "1"]
    assert infer_label_list(rows) is None  # a JSON float: regression
    assert label_ids(rows, None, "train").tolist() == [4.5, 1.0]
    test = write(tmp_path / "test.jsonl", '{"text": "no label here"}\n')
    assert read_custom(test, labelled=False)[0].label is None


def test_errors_name_file_and_line(tmp_path):
    bad_csv = write(tmp_path / "a.csv", "text,label\nok,1\ntoo,many,fields\n")
    with pytest.raises(BertkitError, match=r"a\.csv: line 3: expected 2 comma-separated columns, found 3"):
        read_custom(bad_csv)
    bad_tsv = write(tmp_path / "b.tsv", "text\tlabel\nok\t1\nshort\n")
    with pytest.raises(BertkitError, match=r"b\.tsv: line 3: expected 2 tab-separated columns, found 1"):
        read_custom(bad_tsv)
    no_label = write(tmp_path / "c.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(BertkitError, match=r"c\.jsonl: line 2: no label in field 'label'"):
        read_custom(no_label)
    not_json = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(BertkitError, match=r"d\.jsonl: line 2: not JSON"):
        read_custom(not_json)
    columns = write(tmp_path / "e.csv", "body,label\nx,1\n")
    with pytest.raises(BertkitError, match="cannot tell the text columns among"):
        read_custom(columns)
    with pytest.raises(BertkitError, match=r"no column 'title'; the columns are \['body', 'label'\]"):
        read_custom(columns, text_columns=["title"])
    with pytest.raises(BertkitError, match="one or two columns"):
        read_custom(columns, text_columns=["a", "b", "c"])
    with pytest.raises(BertkitError, match="unknown format"):
        read_custom(write(tmp_path / "f.xml", "<x/>"))
    with pytest.raises(BertkitError, match="no rows"):
        read_custom(write(tmp_path / "g.csv", "text,label\n"))
    with pytest.raises(BertkitError, match=r"line 1: field 'text' must be text"):
        read_custom(write(tmp_path / "h.jsonl", '{"text": 3, "label": 1}\n'))
