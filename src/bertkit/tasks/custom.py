"""Your own classification or regression data: CSV, TSV or JSON Lines files.

CSV (``.csv``: comma-separated, with a header row, quoting as the csv module reads it), TSV
(``.tsv``/``.txt``: tab-separated with a header row, no quoting, as GLUE's files) or JSON Lines
(``.jsonl``/``.json``: one object per line). One or two text columns and a label column; the label
set comes from the training file, and it is a regression task when the training labels are
numbers with a fractional part (``infer_label_list``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from bertkit.errors import BertkitError, file_error
from bertkit.tasks.classification import Example
from bertkit.tasks.files import iter_jsonl
from bertkit.tasks.glue import read_tsv

# Column names tried, in order, when text_columns is not given.
DEFAULT_TEXT_COLUMNS = (("sentence1", "sentence2"), ("text_a", "text_b"), ("premise", "hypothesis"),
                        ("question", "sentence"), ("text",), ("sentence",))


def read_custom(path: str | Path, text_columns: Sequence[str] | None = None, label_column: str = "label",
                labelled: bool = True, split: str = "train") -> list[Example]:
    """Examples from a CSV, TSV or JSONL file.

    text_columns: one or two column names (default: the first of DEFAULT_TEXT_COLUMNS the file
    has); label_column: the label's column, required when labelled (train, dev), optional for
    test files. A missing column, a row with the wrong number of fields, a missing or empty label
    raise BertkitError naming the file (and line).
    """
    path = Path(path)
    if text_columns is not None and not 1 <= len(text_columns) <= 2:
        raise BertkitError(f"text_columns must name one or two columns, not {list(text_columns)}")
    rows = _rows(path)
    first = next(rows, None)
    if first is None:
        raise file_error(path, "no rows")
    columns = _pick_columns(path, first[1], text_columns)
    out = []
    for index, (number, row) in enumerate([first, *rows]):
        out.append(_example(path, number, row, columns, label_column, labelled, f"{split}-{index}"))
    return out


def _example(path: Path, number: int, row: dict, columns: Sequence[str], label_column: str,
             labelled: bool, guid: str) -> Example:
    where = f"{path}:{number}"
    texts = []
    for name in columns:
        if name not in row:
            raise file_error(path, f"line {number}: no {name!r} field")
        value = row[name]
        if not isinstance(value, str):
            raise file_error(path, f"line {number}: field {name!r} must be text, not {type(value).__name__}")
        texts.append(value)
    label = row.get(label_column)
    if labelled and (label is None or (isinstance(label, str) and not label.strip())):
        raise file_error(path, f"line {number}: no label in field {label_column!r}")
    if isinstance(label, bool) or not isinstance(label, (str, int, float, type(None))):
        raise file_error(path, f"line {number}: label {label!r} must be a string or a number")
    if isinstance(label, int):
        label = str(label)
    return Example(guid, texts[0], texts[1] if len(texts) > 1 else None, label, where)


def _pick_columns(path: Path, row: dict, text_columns: Sequence[str] | None) -> list[str]:
    if text_columns is not None:
        missing = [c for c in text_columns if c not in row]
        if missing:
            raise file_error(path, f"no column {missing[0]!r}; the columns are {list(row)}")
        return list(text_columns)
    for names in DEFAULT_TEXT_COLUMNS:
        if all(n in row for n in names):
            return list(names)
    raise file_error(path, f"cannot tell the text columns among {list(row)}: pass text_columns (--text-columns a[,b])")


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, {column: value}) for every data row, by the file's extension."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return iter_jsonl(path)
    if suffix == ".csv":
        return _csv_rows(path)
    if suffix in (".tsv", ".txt"):
        return _tsv_rows(path)
    raise file_error(path, "unknown format: use .csv, .tsv or .jsonl")


def _tsv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    rows = read_tsv(path, header=False)
    try:
        _, header = next(rows)
    except StopIteration:
        raise file_error(path, "empty file: expected a header row") from None
    for number, fields in rows:
        if len(fields) != len(header):
            raise file_error(path, f"line {number}: expected {len(header)} tab-separated columns, found {len(fields)}")
        yield number, dict(zip(header, fields))


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise file_error(path, "empty file: expected a header row")
            number = reader.line_num
            for fields in reader:
                start, number = number + 1, reader.line_num  # a quoted field may span lines
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise file_error(path, f"line {start}: expected {len(header)} comma-separated columns, "
                                           f"found {len(fields)}")
                yield start, dict(zip(header, fields))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise file_error(path, f"cannot read CSV: {e}") from None


