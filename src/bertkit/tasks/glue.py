"""GLUE: the TSV readers of every task (as Google's and HF's processors read them), the label sets,
and the benchmark's submission files.

A data directory is one task's folder of the usual ``download_glue_data.py`` layout (``glue_data/
MRPC``): train.tsv, dev.tsv, test.tsv; MNLI has dev_matched/dev_mismatched and test_matched/
test_mismatched. CoLA's train and dev have no header row; MRPC's begin with a UTF-8 BOM. Every row
must have as many tab-separated columns as the header (CoLA: 4): anything else is an error naming
the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertkit.errors import BertkitError, file_error
from bertkit.io import atomic_open
from bertkit.tasks.classification import Example, is_number
from bertkit.tasks.files import read_lines


@dataclass(frozen=True)
class Columns:
    """Where a split's fields are: column indices (negative counts from the end)."""

    text_a: int
    text_b: int | None = None
    label: int | None = None  # None for test files
    header: bool = True
    width: int | None = None  # the column count of a headerless file


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its folder name, labels (None: regression), columns and file names."""

    name: str
    folder: str  # as download_glue_data.py names it
    labels: tuple[str, ...] | None
    columns: Columns  # train and dev
    test_columns: Columns
    dev: dict[str, str] = field(default_factory=lambda: {"dev": "dev.tsv"})  # split -> file
    test: dict[str, str] = field(default_factory=lambda: {"test": "test.tsv"})
    submission: dict[str, str] = field(default_factory=dict)  # test split -> submission file name


_BINARY = ("0", "1")
_ENTAIL = ("entailment", "not_entailment")
_PAIR_1_2 = Columns(1, 2, -1)
TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", _BINARY, Columns(3, None, 1, header=False, width=4), Columns(1),
             submission={"test": "CoLA.tsv"}),
    GlueTask("sst2", "SST-2", _BINARY, Columns(0, None, 1), Columns(1), submission={"test": "SST-2.tsv"}),
    GlueTask("mrpc", "MRPC", _BINARY, Columns(3, 4, 0), Columns(3, 4), submission={"test": "MRPC.tsv"}),
    GlueTask("stsb", "STS-B", None, Columns(7, 8, -1), Columns(7, 8), submission={"test": "STS-B.tsv"}),
    GlueTask("qqp", "QQP", _BINARY, Columns(3, 4, 5), Columns(1, 2), submission={"test": "QQP.tsv"}),
    GlueTask("mnli", "MNLI", ("contradiction", "entailment", "neutral"), Columns(8, 9, -1), Columns(8, 9),
             dev={"dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"},
             test={"test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"},
             submission={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}),
    GlueTask("qnli", "QNLI", _ENTAIL, _PAIR_1_2, Columns(1, 2), submission={"test": "QNLI.tsv"}),
    GlueTask("rte", "RTE", _ENTAIL, _PAIR_1_2, Columns(1, 2), submission={"test": "RTE.tsv"}),
    GlueTask("wnli", "WNLI", _BINARY, _PAIR_1_2, Columns(1, 2), submission={"test": "WNLI.tsv"}),
)}
# GLUE's diagnostic set (AX): MNLI-style pairs, predicted with the MNLI model.
DIAGNOSTIC = GlueTask("ax", "diagnostic", TASKS["mnli"].labels, Columns(1, 2), Columns(1, 2),
                      dev={}, test={"test": "diagnostic.tsv"}, submission={"test": "AX.tsv"})


def glue_task(name: str) -> GlueTask:
    """The task named `name` (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli; or ax)."""
    key = name.lower().replace("-", "")
    if key == "ax":
        return DIAGNOSTIC
    if key not in TASKS:
        raise BertkitError(f"unknown GLUE task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[key]


def read_tsv(path: str | Path, header: bool = True, width: int | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a tab-separated file without quoting (Google's csv.reader
    with quotechar=None); a leading BOM is dropped, the header row is checked and skipped.

    Every row must have the header's column count (or `width`): a row that does not, raises
    BertkitError naming the file and line. Empty lines at the end of the file are ignored.
    """
    lines = read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    if header:
        if not lines:
            raise file_error(path, "empty file: expected a header row")
        width = len(lines[0].split("\t"))
    for number, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        fields = line.split("\t")
        if width is not None and len(fields) != width:
            raise file_error(path, f"line {number}: expected {width} tab-separated columns, found {len(fields)}")
        yield number, fields


def _examples(path: Path, split: str, columns: Columns, task: GlueTask, labelled: bool) -> list[Example]:
    out = []
    for row, (number, fields) in enumerate(read_tsv(path, columns.header, columns.width)):
        where = f"{path}:{number}"
        try:
            text_b = None if columns.text_b is None else fields[columns.text_b]
            label = fields[columns.label] if labelled and columns.label is not None else None
            text_a = fields[columns.text_a]
        except IndexError:
            raise file_error(path, f"line {number}: too few columns ({len(fields)}) for {task.name}") from None
        guid = fields[0] if not labelled else f"{split}-{row}"
        out.append(Example(guid, text_a, text_b, _check_label(task, label, where, split), where))
    return out


def _check_label(task: GlueTask, label: str | None, where: str, split: str) -> str | float | None:
    if label is None:
        return None
    if task.labels is None:
        if not is_number(label):
            raise BertkitError(f"{where}: {split} score {label!r} is not a number")
        return float(label)
    if label not in task.labels:
        raise BertkitError(f"{where}: {split} label {label!r} is not one of {task.name}'s labels {list(task.labels)}")
    return label


def read_glue(task: str, data_dir: str | Path, split: str) -> list[Example]:
    """Labelled examples of a train or dev split ("train", "dev"; MNLI: "dev_matched",
    "dev_mismatched") from the task's folder."""
    t = glue_task(task)
    files = {"train": "train.tsv", **t.dev}
    if split not in files:
        raise BertkitError(f"{t.name} has no split {split!r}; it has {', '.join(files)}")
    return _examples(_existing(data_dir, files[split]), split, t.columns, t, labelled=True)


def read_glue_test(task: str, data_dir: str | Path) -> dict[str, list[Example]]:
    """Unlabelled test examples per test split ({"test": ...}; MNLI: test_matched, test_mismatched;
    "ax": diagnostic.tsv), guid = the file's index column, for submission files."""
    t = glue_task(task)
    return {split: _examples(_existing(data_dir, name), split, t.test_columns, t, labelled=False)
            for split, name in t.test.items()}


def dev_splits(task: str) -> list[str]:
    """The dev splits of a task: ["dev"], or MNLI's ["dev_matched", "dev_mismatched"]."""
    return list(glue_task(task).dev)


def _existing(data_dir: str | Path, name: str) -> Path:
    path = Path(data_dir) / name
    if not path.is_file():
        raise file_error(path, "no such file (expected the GLUE layout of download_glue_data.py)")
    return path


def write_submission(out_dir: str | Path, task: str, split: str, examples: Sequence[Example],
                     predictions: np.ndarray) -> Path:
    """Write GLUE's submission file for one test split (CoLA.tsv, MNLI-m.tsv, AX.tsv, ...):
    "index\\tprediction" then one row per example; predictions are class ids (written as the
    label names) or, for STS-B, scores (clipped to [0, 5], 3 decimals)."""
    t = glue_task(task)
    if split not in t.submission:
        raise BertkitError(f"{t.name} has no test split {split!r}; it has {', '.join(t.submission)}")
    values = np.asarray(predictions)
    if len(values) != len(examples):
        raise BertkitError(f"{len(values)} predictions for {len(examples)} {t.name} {split} examples")
    path = Path(out_dir) / t.submission[split]
    with atomic_open(path) as f:
        f.write("index\tprediction\n")
        for e, value in zip(examples, values):
            f.write(f"{e.guid}\t{_format_prediction(t, value)}\n")
    return path


def _format_prediction(task: GlueTask, value: float | int) -> str:
    if task.labels is None:
        return f"{min(max(float(value), 0.0), 5.0):.3f}"
    return task.labels[int(value)]
