"""``bertkit finetune nq``: Natural Questions in the BERT-joint style (Alberti et al. 2019, run_nq.py).

  bertkit finetune nq --train nq-train.jsonl.gz --predict nq-dev.jsonl.gz --model BASE --output RUN \\
      [--max-seq-length 512] [--doc-stride 128] [--max-query-length 64] [--max-contexts 48] \\
      [--max-position 50] [--include-unknowns 0.02]

The model (head "nq") gives every token a span start and end logit and the pooled [CLS] an answer
type (UNKNOWN, YES, NO, SHORT, LONG); the loss is the mean of the three cross-entropies. Training
windows are run_nq.py's: a window holding the annotated answer is labelled with it, any other
window (and every window of an example without an answer) is kept with probability
--include-unknowns as UNKNOWN at [CLS]. The training file is read one example at a time, so only
the windows' token ids are held in memory.

Every --predict example is answered run_nq.py's way (the best span over its windows, the long
answer the top-level candidate holding it, the window's answer type deciding yes/no/long only)
and scored with the official NQ metrics. The model is chosen by ``mean-best-threshold-f1``, the
mean of the long- and short-answer F1 at their best score thresholds (the numbers nq_eval.py and
the BERT-joint paper report). RUN then holds the model, ``eval_results.json`` (every nq_eval
number) and ``predictions.json`` in the official format, which ``bertkit evaluate nq PREDICT
predictions.json`` scores the same. A --predict file without annotations is only predicted.

The markers ([Q], [ContextId=i], [Paragraph=k], ...) are single tokens: the vocabulary's own
entries, else its [unusedN] tokens in a fixed order that depends on --max-contexts and
--max-position; the fine-tuned model's config keeps them ("nq"), so ``bertkit predict`` windows
and marks a file as training did. A marker with neither becomes [UNK], as in run_nq.py, with a
warning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.errors import BertkitError
from bertkit.io import atomic_write_text
from bertkit.tasks import nq
from bertkit.tasks.nq import NqConfig
from bertkit.tasks.nq_eval import evaluate_nq, read_nq_gold, read_nq_predictions

if TYPE_CHECKING:
    from torch import nn

    from bertkit.config import BertConfig
    from bertkit.tasks.finetune import Runner
    from bertkit.tokenizer import BertTokenizer

MAIN_METRIC = "mean-best-threshold-f1"
PREDICTIONS_FILE = "predictions.json"
CONFIG_KEY = "nq"  # the fine-tuned model's config.extra entry holding its NqConfig (saved_settings)


class NqTask:
    """The ``FinetuneTask`` of Natural Questions: training windows from ``train``, predictions and
    the official metrics on ``predict``."""

    name = head = "nq"
    main_metric = MAIN_METRIC

    def __init__(self, tokenizer: BertTokenizer, train: Path, predict: Path, config: NqConfig, seed: int = 0) -> None:
        self.config = config
        self.train = training_features(tokenizer, train, config, seed)
        self.examples, self.features, self.inputs, annotated = prediction_windows(tokenizer, predict, config)
        self.gold = read_nq_gold(predict) if annotated else None

    def config_overrides(self) -> dict[str, Any]:
        """The windowing settings go into the model's config: the marker ids depend on them, so
        ``bertkit predict`` must window as training did."""
        return {"extra": {CONFIG_KEY: saved_settings(self.config)}}

    def check_model(self, model: nn.Module) -> None:
        """The head has one shape; the windows must fit the position table."""
        check_length(self.config, model.config)

    def train_features(self) -> dict[str, np.ndarray]:
        return self.train

    def objective(self):
        from bertkit.tasks.objectives import NqObjective

        return NqObjective()

    def evaluate(self, model: nn.Module, run: Runner) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """nq_eval's numbers and their long/short mean (without gold: none); the predictions in
        nq_eval's format, one per --predict example."""
        predictions = predict_windows(model, run, self.examples, self.features, self.inputs, desc="evaluating nq")
        if self.gold is None:
            return {}, predictions
        scores = evaluate_nq(self.gold, read_nq_predictions({"predictions": predictions}))
        main = (scores["long-best-threshold-f1"] + scores["short-best-threshold-f1"]) / 2
        return {MAIN_METRIC: main, **scores}, predictions

    def write_predictions(self, out: Path, model: nn.Module, run: Runner, dev_predictions: list[dict[str, Any]],
                          do_predict: bool) -> list[Path]:
        """``predictions.json``: {"predictions": [...]}, the official NQ format."""
        path = out / PREDICTIONS_FILE
        atomic_write_text(path, json.dumps({"predictions": dev_predictions}) + "\n")
        return [path]


def prediction_windows(tokenizer: BertTokenizer, path: Path, config: NqConfig
                       ) -> tuple[list[nq.NqExample], list[nq.NqFeature], dict[str, np.ndarray], bool]:
    """An NQ file's examples, their windows, the padded model inputs, and whether it is annotated."""
    examples, annotated = [], False
    for entry in nq.iter_nq(path):
        examples.append(nq.create_example(entry, max_contexts=config.max_contexts, max_position=config.max_position))
        annotated = annotated or bool(entry.annotations)
    features = nq.create_features(tokenizer, examples, config)
    inputs = pad_windows([f.encoding.ids for f in features], [f.encoding.type_ids for f in features])
    return examples, features, inputs, annotated


def predict_windows(model: nn.Module, run: Runner, examples: list[nq.NqExample], features: list[nq.NqFeature],
                    inputs: dict[str, np.ndarray], n_best_size: int = nq.N_BEST_SIZE, max_answer_length: int = 30,
                    **run_options: Any) -> list[dict[str, Any]]:
    """run_nq.py's predictions (official format) from the model's logits on the windows."""
    out = run(model, inputs, ["start_logits", "end_logits", "logits"], **run_options)
    return nq.compute_predictions(examples, features, out["start_logits"], out["end_logits"], out["logits"],
                                  n_best_size, max_answer_length)


def training_features(tokenizer: BertTokenizer, path: Path, config: NqConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """BERT-joint's training windows of an NQ jsonl(.gz) file, read one example at a time:
    input_ids, token_type_ids, attention_mask (N, T) int32 padded to the longest window, and
    start_positions, end_positions, answer_types (N,) int64. Examples whose annotated candidate
    is not among the kept contexts are skipped (run_nq.py's rule); windows are sampled with ``seed``."""
    made = (nq.create_example(e, True, config.max_contexts, config.max_position) for e in nq.iter_nq(path))
    ids, type_ids, labels = [], [], []
    for f in nq.iter_features(tokenizer, (x for x in made if x is not None), config, training=True, seed=seed):
        ids.append(np.asarray(f.encoding.ids, dtype=np.int32))
        type_ids.append(np.asarray(f.encoding.type_ids, dtype=np.int8))
        labels.append((f.start_position, f.end_position, int(f.answer_type)))
    if not ids:
        raise BertkitError(f"{path}: no training windows (no example with an answer in its contexts, "
                           "and --include-unknowns keeps none without one)")
    columns = np.asarray(labels, dtype=np.int64)  # (N, 3)
    return {**pad_windows(ids, type_ids), "start_positions": columns[:, 0], "end_positions": columns[:, 1],
            "answer_types": columns[:, 2]}


def pad_windows(ids: list, type_ids: list) -> dict[str, np.ndarray]:
    """input_ids, token_type_ids, attention_mask (N, T) int32 from N rows of ids and type ids,
    padded at the end (with 0, [PAD] in BERT's vocabularies) to the longest row."""
    lengths = np.array([len(row) for row in ids])
    width = int(lengths.max(initial=1))
    out = {name: np.zeros((len(ids), width), dtype=np.int32) for name in ("input_ids", "token_type_ids")}
    for i, (row, types) in enumerate(zip(ids, type_ids)):
        out["input_ids"][i, : len(row)] = row
        out["token_type_ids"][i, : len(row)] = types
    out["attention_mask"] = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)
    return out


def check_length(config: NqConfig, model_config: BertConfig) -> None:
    """Refuse windows longer than the model's position table."""
    if config.max_seq_length > model_config.max_position_embeddings:
        raise BertkitError(f"--max-seq-length {config.max_seq_length} is longer than the model's "
                           f"{model_config.max_position_embeddings} positions")


def saved_settings(config: NqConfig) -> dict[str, int]:
    """What a fine-tuned NQ model's config keeps of its NqConfig (training-only fields left out)."""
    return {"max_seq_length": config.max_seq_length, "doc_stride": config.doc_stride,
            "max_query_length": config.max_query_length, "max_contexts": config.max_contexts,
            "max_position": config.max_position}


def settings_of(model_config: BertConfig) -> NqConfig:
    """The NqConfig a model was fine-tuned with (its config's "nq" entry), run_nq.py's defaults
    for a model that has none (e.g. one converted from Google's BERT-joint checkpoint)."""
    saved = model_config.extra.get(CONFIG_KEY) or {}
    if not isinstance(saved, dict) or not set(saved) <= set(saved_settings(NqConfig())):
        raise BertkitError(f"the model config's {CONFIG_KEY!r} entry is not NQ windowing settings: {saved!r}")
    return NqConfig(**saved)


def unknown_markers(tokenizer: BertTokenizer, config: NqConfig) -> list[str]:
    """The markers that become [UNK]: neither in the vocabulary nor given an [unusedN] token."""
    ids = nq.marker_ids(tokenizer, config.max_contexts, config.max_position)
    return [marker for marker, i in ids.items() if i == tokenizer.unk_id]


# --- command line -----------------------------------------------------------------------------


def add_nq_command(finetune: argparse._SubParsersAction) -> None:
    """Register ``bertkit finetune nq``."""
    from bertkit.tasks.finetune import add_finetune_options

    d = NqConfig()
    p = finetune.add_parser("nq", help="Natural Questions, BERT-joint style (long and short answers)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, type=Path, metavar="FILE", help="NQ training jsonl(.gz)")
    p.add_argument("--predict", required=True, type=Path, metavar="FILE",
                   help="NQ jsonl(.gz) to predict and (with annotations) score, e.g. the dev set")
    p.add_argument("--max-seq-length", type=int, default=d.max_seq_length, help="default: %(default)s")
    p.add_argument("--doc-stride", type=int, default=d.doc_stride, help="default: %(default)s")
    p.add_argument("--max-query-length", type=int, default=d.max_query_length, help="default: %(default)s")
    p.add_argument("--max-contexts", type=int, default=d.max_contexts,
                   help="long-answer candidates kept per document (default: %(default)s)")
    p.add_argument("--max-position", type=int, default=d.max_position,
                   help="highest [Paragraph=k]-style rank; later candidates share it (default: %(default)s)")
    p.add_argument("--include-unknowns", type=float, default=0.02, metavar="P",
                   help="the fraction of training windows without an answer that are kept (default: %(default)s, "
                        "BERT-joint's; negative: none)")
    add_finetune_options(p)
    p.set_defaults(func=cmd_nq)


def cmd_nq(ns: argparse.Namespace) -> None:
    from bertkit.convert.checkpoint import read_config
    from bertkit.tasks.finetune import finetune_args, report, run_finetune
    from bertkit.tokenizer import load_tokenizer

    if ns.do_predict:
        raise BertkitError("finetune nq always predicts --predict FILE; it has no separate test set (--do-predict)")
    config = NqConfig(ns.max_seq_length, ns.doc_stride, ns.max_query_length, ns.max_contexts, ns.max_position,
                      ns.include_unknowns)
    check_length(config, read_config(ns.model)[1])  # before the data, which takes long to read
    tokenizer = load_tokenizer(ns.model, lower_case=ns.lower_case)
    unknown = unknown_markers(tokenizer, config)
    if unknown:
        print(f"warning: {len(unknown)} NQ markers are neither in the vocabulary nor given an [unusedN] token and "
              f"become [UNK] (e.g. {unknown[0]})", file=sys.stderr)
    task = NqTask(tokenizer, ns.train, ns.predict, config, ns.seed)
    fa, train, optim = finetune_args(ns, len(task.train["input_ids"]))
    report(run_finetune(task, fa, train, optim), task.main_metric)
