"""``bertkit finetune classify``: GLUE and custom sentence (pair) classification and regression.

  bertkit finetune classify --task mrpc --data-dir glue_data/MRPC --model BASE --output RUN
  bertkit finetune classify --task custom --train t.csv --dev d.csv [--test x.csv] \\
      [--text-columns a,b] [--label-column label] --model BASE --output RUN

The model is chosen by the task's GLUE score on dev (the mean of its metrics: MCC for CoLA, F1
and accuracy for MRPC/QQP, Pearson and Spearman for STS-B; MNLI by the matched set). RUN then
holds the model (with its label names), ``eval_results.json``, each dev split's class
probabilities (``dev_results.tsv``) and, with ``--do-predict``, Google's ``test_results.tsv``
and the GLUE submission file.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.errors import BertkitError
from bertkit.tasks.classification import (
    ClassificationData,
    Example,
    check_head_labels,
    encode_examples,
    infer_label_list,
    softmax,
    write_test_results,
)

if TYPE_CHECKING:
    from torch import nn

    from bertkit.tasks.finetune import Runner
    from bertkit.tokenizer import BertTokenizer


@dataclass
class ClassifyData:
    """A task's examples: train, each dev split, each test split (empty unless asked for)."""

    task: str  # a GLUE task name, or "custom"
    train: list[Example]
    dev: dict[str, list[Example]]
    test: dict[str, list[Example]]
    label_list: list[str] | None  # None: regression

    @property
    def metric_task(self) -> str:
        if self.task != "custom":
            return self.task
        return "regression" if self.label_list is None else "classification"


def read_classify_data(task: str, data_dir: Path | None = None, train: Path | None = None, dev: Path | None = None,
                       test: Path | None = None, text_columns: list[str] | None = None, label_column: str = "label",
                       with_test: bool = False) -> ClassifyData:
    """Read a GLUE task's folder (``data_dir``) or custom CSV/TSV/JSONL files (task "custom")."""
    from bertkit.tasks import glue
    from bertkit.tasks.custom import read_custom

    if task == "custom":
        if train is None or dev is None:
            raise BertkitError("--task custom needs --train FILE and --dev FILE")
        train_examples = read_custom(train, text_columns, label_column, split="train")
        dev_examples = {"dev": read_custom(dev, text_columns, label_column, split="dev")}
        tests = {}
        if with_test:
            if test is None:
                raise BertkitError("--do-predict with --task custom needs --test FILE")
            tests = {"test": read_custom(test, text_columns, label_column, labelled=False, split="test")}
        return ClassifyData("custom", train_examples, dev_examples, tests, infer_label_list(train_examples))
    if data_dir is None:
        raise BertkitError(f"--task {task} needs --data-dir (the task's GLUE folder)")
    t = glue.glue_task(task)
    return ClassifyData(t.name, glue.read_glue(t.name, data_dir, "train"),
                        {split: glue.read_glue(t.name, data_dir, split) for split in glue.dev_splits(t.name)},
                        glue.read_glue_test(t.name, data_dir) if with_test else {},
                        list(t.labels) if t.labels is not None else None)


class ClassifyTask:
    """The ``FinetuneTask`` of sentence classification and regression."""

    head = "classification"

    def __init__(self, data: ClassifyData, tokenizer: BertTokenizer, max_seq_length: int = 128) -> None:
        self.data, self.tokenizer, self.max_seq_length = data, tokenizer, max_seq_length
        self.name = data.task
        labels = data.label_list
        self.train = encode_examples(tokenizer, data.train, max_seq_length, labels, "train")
        self.dev = {s: encode_examples(tokenizer, ex, max_seq_length, labels, s) for s, ex in data.dev.items()}
        self.dev_features = {s: _features(tokenizer, d) for s, d in self.dev.items()}  # evaluated every epoch
        self.main_metric = self._prefix(next(iter(data.dev)), "score")

    def _prefix(self, split: str, name: str) -> str:
        """Metric names: plain with one dev split, "<split>_<name>" with several (MNLI)."""
        return name if len(self.data.dev) == 1 else f"{split}_{name}"

    def config_overrides(self) -> dict[str, Any]:
        if self.data.label_list is None:
            return {"num_labels": 1, "label_names": None}
        return {"label_names": list(self.data.label_list)}

    def check_model(self, model: nn.Module) -> None:
        from bertkit.convert.checkpoint import read_config

        info = model.load_info
        if info.created:  # a new head: nothing to disagree with
            return
        _, saved = read_config(info.path)
        check_head_labels(saved.label_names if saved.label_names else saved.num_labels, self.data.label_list,
                          str(info.path))

    def train_features(self) -> dict[str, np.ndarray]:
        return _features(self.tokenizer, self.train)

    def objective(self):
        from bertkit.tasks.objectives import ClassificationObjective

        return ClassificationObjective(regression=self.data.label_list is None)

    def evaluate(self, model: nn.Module, run: Runner) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Each dev split's GLUE metrics and mean loss; the predictions are its logits (N, C)."""
        from bertkit.tasks.metrics import task_metrics

        metrics: dict[str, float] = {}
        logits_by_split = {}
        for split, data in self.dev.items():
            logits = run(model, self.dev_features[split], ["logits"], desc=f"evaluating {split}")["logits"]
            predicted = logits[:, 0] if self.data.label_list is None else logits.argmax(-1)
            scores = {**task_metrics(self.data.metric_task, data.labels, predicted), "loss": _loss(logits, data.labels)}
            metrics.update({self._prefix(split, k): v for k, v in scores.items()})
            logits_by_split[split] = logits
        return metrics, logits_by_split

    def write_predictions(self, out: Path, model: nn.Module, run: Runner, dev_predictions: dict[str, np.ndarray],
                          do_predict: bool) -> list[Path]:
        """``<split>_results.tsv`` for every dev split; with do_predict the test splits' (Google's
        ``test_results.tsv``) and the GLUE submission files."""
        written = [write_test_results(out / f"{split}_results.tsv", self._outputs(logits))
                   for split, logits in dev_predictions.items()]
        if not do_predict:
            return written
        for split, examples in self.data.test.items():
            data = encode_examples(self.tokenizer, examples, self.max_seq_length, self.data.label_list, split,
                                   labelled=False)
            logits = run(model, _features(self.tokenizer, data), ["logits"], desc=f"predicting {split}")["logits"]
            written.append(write_test_results(out / f"{split}_results.tsv", self._outputs(logits)))
            if self.data.task != "custom":
                from bertkit.tasks.glue import write_submission

                values = logits[:, 0] if self.data.label_list is None else logits.argmax(-1)
                written.append(write_submission(out, self.data.task, split, examples, values))
        return written

    def _outputs(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C), or the predicted values (N,) for regression."""
        return logits[:, 0] if self.data.label_list is None else softmax(logits)


def _features(tokenizer: BertTokenizer, data: ClassificationData) -> dict[str, np.ndarray]:
    """Padded to the longest example (each batch is cut to its own longest when it runs)."""
    features = tokenizer.pad(data.encodings, return_tensors="np")
    if data.labels is not None:
        features["labels"] = data.labels
    return features


def _loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy (classification) or squared error (regression, logits (N, 1))."""
    from bertkit.tasks.metrics import mean_cross_entropy

    if logits.shape[1] == 1:
        return float(np.mean((logits[:, 0].astype(np.float64) - labels) ** 2))
    return mean_cross_entropy(logits, labels)


# --- command line -----------------------------------------------------------------------------


def add_classify_command(finetune: argparse._SubParsersAction) -> None:
    """Register ``bertkit finetune classify``."""
    from bertkit.tasks.finetune import add_finetune_options
    from bertkit.tasks.glue import TASKS

    p = finetune.add_parser("classify", help="GLUE or custom sentence (pair) classification / regression",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=[*TASKS, "custom"])
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="the GLUE task's folder (train.tsv, dev.tsv, test.tsv)")
    p.add_argument("--train", type=Path, metavar="FILE", help="custom: training CSV/TSV/JSONL")
    p.add_argument("--dev", type=Path, metavar="FILE", help="custom: dev CSV/TSV/JSONL")
    p.add_argument("--test", type=Path, metavar="FILE", help="custom: test CSV/TSV/JSONL (for --do-predict)")
    p.add_argument("--text-columns", metavar="A[,B]", type=lambda s: s.split(","),
                   help="custom: the text column(s) (default: sentence1,sentence2 / text_a,text_b / text / ...)")
    p.add_argument("--label-column", default="label", help="custom: the label column (default: %(default)s)")
    p.add_argument("--max-seq-length", type=int, default=128, help="default: %(default)s")
    add_finetune_options(p)
    p.set_defaults(func=cmd_classify)


def cmd_classify(ns: argparse.Namespace) -> None:
    from bertkit.tasks.finetune import finetune_args, report, run_finetune
    from bertkit.tokenizer import load_tokenizer

    data = read_classify_data(ns.task, ns.data_dir, ns.train, ns.dev, ns.test, ns.text_columns, ns.label_column,
                              with_test=ns.do_predict)
    tokenizer = load_tokenizer(ns.model, lower_case=ns.lower_case)
    task = ClassifyTask(data, tokenizer, ns.max_seq_length)
    fa, train, optim = finetune_args(ns, len(data.train))
    report(run_finetune(task, fa, train, optim), task.main_metric)
