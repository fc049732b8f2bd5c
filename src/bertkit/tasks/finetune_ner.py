"""``bertkit finetune ner``: named-entity recognition on CoNLL files or CLUENER JSON.

  bertkit finetune ner --data-dir conll2003 --model BASE --output RUN [--do-predict]
  bertkit finetune ner --format cluener --data-dir cluener --model BASE --output RUN
  bertkit finetune ner --train a.conll --dev b.conll [--test c.conll] --model BASE --output RUN

Each word's first piece is labelled (the others are not scored); sentences longer than
--max-seq-length pieces are split into windows of whole words. The tag set is the training
file's; a dev or test tag outside it is an error naming the file and line. The model is chosen by
entity-level F1 on dev (seqeval, conlleval's definition). RUN then holds the model (with its tag
names), ``eval_results.json`` (precision, recall, f1, token accuracy, loss and f1_<type>), the dev
predictions written back in the input's format (``dev_predictions.txt``: the CoNLL file with its
last column replaced by the predicted tag; CLUENER: the JSON lines with predicted "label" spans)
and, with --do-predict, the test set's (``test_predictions.*``), scored as test_* in
eval_results.json when the test file has tags.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.errors import BertkitError, file_error
from bertkit.tasks import ner

if TYPE_CHECKING:
    from torch import nn

    from bertkit.tasks.finetune import Runner
    from bertkit.tokenizer import BertTokenizer


@dataclass
class NerSplits:
    train: ner.NerData
    dev: ner.NerData
    test: ner.NerData | None  # None unless asked for


def read_ner_splits(format: str = "conll", data_dir: Path | None = None, train: Path | None = None,
                    dev: Path | None = None, test: Path | None = None, with_test: bool = False) -> NerSplits:
    """The train/dev(/test) files: given one by one, else found in data_dir by their usual names
    (``ner.SPLIT_FILES``). Train and dev must have tags."""
    found = ner.find_split_files(data_dir, format) if data_dir is not None else {}
    paths = {"train": train or found.get("train"), "dev": dev or found.get("dev"), "test": test or found.get("test")}
    for split in ("train", "dev") + (("test",) if with_test else ()):
        if paths[split] is None:
            where = f" (none of {ner.SPLIT_FILES[format][split]} in {data_dir})" if data_dir is not None else ""
            raise BertkitError(f"no {split} file: pass --{split} FILE or --data-dir DIR{where}")
    data = NerSplits(ner.read_ner(paths["train"], format), ner.read_ner(paths["dev"], format),
                     ner.read_ner(paths["test"], format) if with_test else None)
    for split in (data.train, data.dev):
        _require_tags(split)
    return data


def _require_tags(data: ner.NerData) -> None:
    if not data.sentences:
        raise file_error(data.path, "no sentences")
    untagged = next((s for s in data.sentences if s.labels is None), None)
    if untagged is not None:
        raise file_error(data.path, f"line {untagged.lines[0]}: a sentence without tags")


def _labelled(data: ner.NerData) -> bool:
    return bool(data.sentences) and all(s.labels is not None for s in data.sentences)


class NerTask:
    """The ``FinetuneTask`` of token classification with BIO tags."""

    name = "ner"
    head = "token_classification"
    main_metric = "f1"

    def __init__(self, data: NerSplits, tokenizer: BertTokenizer, max_seq_length: int = 128) -> None:
        self.data, self.tokenizer, self.max_seq_length = data, tokenizer, max_seq_length
        self.labels = ner.label_list(data.train.sentences)
        self.train = ner.create_features(tokenizer, data.train, self.labels, max_seq_length)
        self.dev = ner.create_features(tokenizer, data.dev, self.labels, max_seq_length)
        self.dev_arrays = ner.collate(tokenizer, self.dev, return_tensors="np")
        self.test = None
        if data.test is not None:  # made now, so that a bad test file fails before training
            self.test = ner.create_features(tokenizer, data.test, self.labels if _labelled(data.test) else None,
                                            max_seq_length)
        self.test_metrics: dict[str, float] = {}  # the labelled test set's scores (test_f1, ...), for eval_results.json

    def config_overrides(self) -> dict[str, Any]:
        return {"label_names": list(self.labels)}

    def check_model(self, model: nn.Module) -> None:
        from bertkit.convert.checkpoint import read_config
        from bertkit.tasks.classification import check_head_labels

        if self.max_seq_length > model.config.max_position_embeddings:
            raise BertkitError(f"--max-seq-length {self.max_seq_length} is more than the model's "
                               f"{model.config.max_position_embeddings} positions")
        info = model.load_info
        if info.created:  # a new head: nothing to disagree with
            return
        _, saved = read_config(info.path)
        check_head_labels(saved.label_names if saved.label_names else saved.num_labels, self.labels, str(info.path))

    def train_features(self) -> dict[str, np.ndarray]:
        return ner.collate(self.tokenizer, self.train, return_tensors="np")

    def objective(self):
        from bertkit.tasks.objectives import TokenClassificationObjective

        return TokenClassificationObjective()

    def evaluate(self, model: nn.Module, run: Runner) -> tuple[dict[str, float], list[list[str]]]:
        """Entity-level precision, recall, F1 (micro), token accuracy, f1_<type> and the mean
        cross-entropy of the scored pieces on dev; the predictions are the dev tags per sentence."""
        logits = run(model, self.dev_arrays, ["logits"], desc="evaluating dev")["logits"]  # (F, T, C)
        tags = ner.predict_tags(self.data.dev, self.dev, logits, self.labels)
        metrics = scores(self.data.dev, tags)
        metrics["loss"] = _loss(logits, self.dev_arrays["labels"])
        return metrics, tags

    def write_predictions(self, out: Path, model: nn.Module, run: Runner, dev_predictions: list[list[str]],
                          do_predict: bool) -> list[Path]:
        """``dev_predictions.<ext>`` and, with do_predict, ``test_predictions.<ext>`` in the input's
        format; a labelled test set's scores go to ``self.test_metrics`` (test_f1, ...)."""
        written = [ner.write_predictions(_predictions_path(out, "dev", self.data.dev), self.data.dev, dev_predictions)]
        if not do_predict or self.test is None:
            return written
        arrays = ner.collate(self.tokenizer, self.test, return_tensors="np")
        logits = run(model, arrays, ["logits"], desc="predicting test")["logits"]
        tags = ner.predict_tags(self.data.test, self.test, logits, self.labels)
        written.append(ner.write_predictions(_predictions_path(out, "test", self.data.test), self.data.test, tags))
        if _labelled(self.data.test):
            self.test_metrics = {f"test_{k}": v for k, v in scores(self.data.test, tags).items()}
        return written


def scores(data: ner.NerData, tags: list[list[str]]) -> dict[str, float]:
    """seqeval's micro precision, recall, f1, token accuracy and each type's f1 (f1_<type>), flat."""
    report = ner.ner_metrics([s.labels for s in data.sentences], tags)  # type: ignore[misc]
    flat = {k: report[k] for k in ("precision", "recall", "f1", "accuracy")}
    flat.update({f"f1_{kind}": s["f1"] for kind, s in report["per_type"].items()})
    return flat


def _loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of logits (F, T, C) at the scored pieces of labels (F, T)."""
    from bertkit.tasks.metrics import mean_cross_entropy

    scored = labels != ner.IGNORE
    return mean_cross_entropy(logits[scored], labels[scored]) if scored.any() else 0.0  # over (S, C)


def _predictions_path(out: Path, split: str, data: ner.NerData) -> Path:
    suffix = data.path.suffix if data.path.suffix in (".txt", ".conll", ".json", ".jsonl") else ".txt"
    return out / f"{split}_predictions{suffix}"


# --- command line -----------------------------------------------------------------------------


def add_ner_command(finetune: argparse._SubParsersAction) -> None:
    """Register ``bertkit finetune ner``."""
    from bertkit.tasks.finetune import add_finetune_options

    p = finetune.add_parser("ner", help="named-entity recognition: CoNLL-2003, WNUT-17, CLUENER, your own CoNLL files",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="a folder with the splits by their usual names (train.txt, dev.txt/valid.txt, test.txt; "
                        "WNUT-17's; train.json, dev.json, test.json for CLUENER)")
    p.add_argument("--format", choices=ner.FORMATS, default="conll",
                   help="conll: a token per line, the tag last; cluener: JSON lines with spans (default: %(default)s)")
    p.add_argument("--train", type=Path, metavar="FILE", help="the training file (instead of --data-dir's)")
    p.add_argument("--dev", type=Path, metavar="FILE", help="the dev file (instead of --data-dir's)")
    p.add_argument("--test", type=Path, metavar="FILE", help="the test file, for --do-predict (instead of --data-dir's)")
    p.add_argument("--max-seq-length", type=int, default=128,
                   help="pieces per window, [CLS] and [SEP] included (default: %(default)s)")
    add_finetune_options(p)
    p.set_defaults(func=cmd_ner)


def cmd_ner(ns: argparse.Namespace) -> None:
    from bertkit.tasks.finetune import finetune_args, report, run_finetune
    from bertkit.tokenizer import load_tokenizer

    data = read_ner_splits(ns.format, ns.data_dir, ns.train, ns.dev, ns.test, with_test=ns.do_predict)
    tokenizer = load_tokenizer(ns.model, lower_case=ns.lower_case)
    task = NerTask(data, tokenizer, ns.max_seq_length)
    fa, train, optim = finetune_args(ns, len(task.train))
    report(run_finetune(task, fa, train, optim), task.main_metric)
