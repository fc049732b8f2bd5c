"""``bertkit finetune squad``: SQuAD v1.1 / v2.0 span question answering (Google's run_squad.py).

  bertkit finetune squad --train train-v1.1.json --predict dev-v1.1.json --model BASE --output RUN
  bertkit finetune squad --version-2 --train train-v2.0.json --predict dev-v2.0.json --model BASE --output RUN
  bertkit finetune squad --train dev-v1.1.json --heldout-articles 0.5 --model BASE --output RUN

Training windows follow Google's: [CLS] question [SEP] context window [SEP], a window without
the answer (and, for v2.0, an unanswerable question) points at [CLS]. Every evaluation predicts
the --predict file (n-best, max answer length, v2.0's null odds) and scores it with the official
definitions; the model is chosen by F1 (v2.0: best_f1, the F1 at the best null threshold, at
which v2.0's predictions.json is then written). RUN holds the model, eval_results.json and
predictions.json, nbest_predictions.json and (v2.0) null_odds.json. A --predict file without
answers is predicted but not scored, and the latest model is kept.

--heldout-articles FRACTION splits --train by article (deterministically, by title) into a
training part and a held-out part that is predicted instead of --predict: the way to measure
SQuAD fine-tuning where only dev-v1.1.json is at hand.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.errors import BertkitError
from bertkit.tasks.squad import (
    SquadConfig,
    SquadData,
    SquadExample,
    SquadFeature,
    count_questions,
    create_features,
    load_json,
    read_squad,
    split_by_article,
)

if TYPE_CHECKING:
    from torch import nn

    from bertkit.tasks.finetune import Runner
    from bertkit.tasks.squad_predict import SquadPredictions
    from bertkit.tokenizer import BertTokenizer

# Google's run_squad.py flags where they differ from the shared fine-tuning defaults (batch 32,
# 3 epochs, 10% warmup are the same). Google's README fine-tunes BERT-Base with batch 12,
# learning rate 3e-5, 2 epochs; BERT-Large on v2.0 with batch 24, 3e-5, 2 epochs.
SQUAD_DEFAULTS = {"learning_rate": 5e-5}
METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact",
           "best_exact_thresh", "best_f1", "best_f1_thresh")  # eval_results.json's share of the official scores


N_BEST_SIZE = 20  # run_squad.py's n_best_size


@dataclass(frozen=True)
class AnswerArgs:
    """How logits become answers (Google's run_squad.py flags)."""

    n_best_size: int | None = None  # candidates per question; None: the head's (SQuAD 20, NQ 10)
    max_answer_length: int = 30  # longest answer in word pieces
    null_threshold: float = 0.0  # v2.0: no answer when null odds exceed this (a --predict file without answers)

    def __post_init__(self) -> None:
        if (self.n_best_size is not None and self.n_best_size < 1) or self.max_answer_length < 1:
            raise BertkitError("--n-best-size and --max-answer-length must be at least 1")

    def n_best(self, head_default: int) -> int:
        """The n-best size asked for, else the head's own: run_squad.py's 20, run_nq.py's 10."""
        return head_default if self.n_best_size is None else self.n_best_size


@dataclass
class SquadFiles:
    """The SQuAD JSON to train on and the one to predict (and score when it has answers)."""

    train: dict[str, Any]
    predict: dict[str, Any]
    train_name: str  # for messages
    predict_name: str


def read_squad_files(train: Path, predict: Path | None = None, heldout_articles: float | None = None,
                     split_seed: int = 0) -> SquadFiles:
    """Load --train and --predict; with ``heldout_articles`` split --train by article
    (``squad.split_by_article``) and predict the held-out part instead."""
    data = load_json(train)
    if heldout_articles is None:
        if predict is None:
            raise BertkitError("--predict FILE is needed (or --heldout-articles FRACTION to predict part of --train)")
        return SquadFiles(data, load_json(predict), str(train), str(predict))
    if predict is not None and Path(predict).resolve() != Path(train).resolve():
        raise BertkitError(f"--heldout-articles predicts held-out articles of --train {train}, "
                           f"not --predict {predict}: leave out --predict or name the same file")
    try:
        kept, held = split_by_article(data, heldout_articles, split_seed)
    except BertkitError as err:
        raise BertkitError(f"{train}: --heldout-articles: {err}") from None
    _note(f"{train}: training on {len(kept['data'])} articles ({count_questions(kept)} questions), predicting "
          f"the {len(held['data'])} held out ({count_questions(held)} questions; split seed {split_seed})")
    return SquadFiles(kept, held, f"{train} (training articles)", f"{train} (held-out articles)")


class SquadTask:
    """The ``FinetuneTask`` of SQuAD: features made once, the predict set's kept for every evaluation."""

    head = "qa"

    def __init__(self, files: SquadFiles, tokenizer: BertTokenizer, config: SquadConfig | None = None,
                 answers: AnswerArgs | None = None, version_2: bool = False, max_train: int | None = None) -> None:
        """max_train: train on at most this many questions, a fixed random subset (quick comparisons)."""
        config = config or SquadConfig()
        self.files, self.config, self.answers, self.version_2 = files, config, answers or AnswerArgs(), version_2
        self.name = "squad_v2" if version_2 else "squad"
        self.main_metric = "best_f1" if version_2 else "f1"
        train = _read(files.train, files.train_name, version_2, training=True).examples
        if max_train is not None and len(train) > max_train:
            train = [train[i] for i in np.sort(np.random.default_rng(0).choice(len(train), max_train, replace=False))]
        self.train = feature_arrays(tokenizer, create_features(tokenizer, train, config, training=True))
        predict = _read(files.predict, files.predict_name, version_2, training=False)
        self.examples = predict.examples
        self.features = create_features(tokenizer, self.examples, config)
        self.predict = feature_arrays(tokenizer, self.features)
        self.scored = _has_answers(files.predict, files.predict_name)
        if not self.scored:
            _note(f"{files.predict_name}: no answers to score against: predictions only, the latest model is kept")

    @classmethod
    def from_split(cls, tokenizer: BertTokenizer, path: str | Path, heldout: float = 0.5, split_seed: int = 0,
                   max_seq_length: int = 384, doc_stride: int = 128, max_query_length: int = 64,
                   max_train: int | None = None) -> SquadTask:
        """SQuAD v1.1 ``path`` split by article: train on the rest, evaluate on ``heldout`` of the
        articles (``--train PATH --heldout-articles HELDOUT``, as the quality benchmark runs it)."""
        files = read_squad_files(Path(path), None, heldout, split_seed)
        return cls(files, tokenizer, SquadConfig(max_seq_length, doc_stride, max_query_length), max_train=max_train)

    @property
    def num_train(self) -> int:
        """Training windows (features), what an epoch passes over."""
        return len(self.train["input_ids"])

    def config_overrides(self) -> dict[str, Any]:
        return {}

    def check_model(self, model: nn.Module) -> None:
        """Positions for --max-seq-length; a note when a classifier fine-tuned for another task is
        left aside (a pretraining head is, silently). A checkpoint's QA head of another shape is
        refused when it is loaded."""
        info = model.load_info
        positions = model.config.max_position_embeddings
        if self.config.max_seq_length > positions:
            raise BertkitError(f"--max-seq-length {self.config.max_seq_length} is longer than the model's "
                               f"{positions} positions ({info.path})")
        if info.created and any(n.startswith("classifier.") for n in info.ignored):
            _note(f"{info.path}: a new QA head is trained; the checkpoint's classifier head is not used")

    def train_features(self) -> dict[str, np.ndarray]:
        return self.train

    def objective(self):
        from bertkit.tasks.objectives import SpanObjective

        return SpanObjective()

    def evaluate(self, model: nn.Module, run: Runner) -> tuple[dict[str, float], SquadPredictions]:
        """The official scores of the predict set (none without answers) and its predictions
        (v2.0: re-made at the best null threshold when scored)."""
        from bertkit.tasks.squad_predict import evaluate_predictions

        predictions = answer_questions(model, run, self.examples, self.features, self.predict, self.answers,
                                       self.version_2, desc="evaluating")
        if not self.scored:
            return {}, predictions
        predictions, scores = evaluate_predictions(self.files.predict, predictions)
        return {k: float(scores[k]) for k in METRICS if k in scores}, predictions

    def write_predictions(self, out: Path, model: nn.Module, run: Runner, dev_predictions: SquadPredictions,
                          do_predict: bool) -> list[Path]:
        """predictions.json, nbest_predictions.json and (v2.0) null_odds.json in ``out``."""
        from bertkit.tasks.squad_predict import write_predictions

        return write_predictions(out, dev_predictions)


def _read(dataset: dict[str, Any], name: str, version_2: bool, training: bool) -> SquadData:
    """read_squad, refusing a v2.0 file without --version-2; what was left out is said on stderr."""
    data = read_squad(dataset, training=training)
    if data.version_2 and not version_2:
        raise BertkitError(f"{name}: a SQuAD 2.0 file (questions marked is_impossible): add --version-2")
    if not data.examples:
        raise BertkitError(f"{name}: no question to {'train on' if training else 'predict'}")
    counts = [(data.bad_answers if training else 0, "answers not found at their answer_start"),
              (data.skipped, "questions left without a usable answer"),
              (data.empty_contexts, "questions with an empty context" + ("" if training else ' (answered "")'))]
    found = [f"{n} {what}" for n, what in counts if n]
    if found:
        _note(f"{name}: {'left out' if training else 'note'}: {'; '.join(found)}")
    return data


def answer_questions(model: nn.Module, run: Runner, examples: list[SquadExample], features: list[SquadFeature],
                     arrays: dict[str, np.ndarray], answers: AnswerArgs, version_2: bool,
                     desc: str = "predicting") -> SquadPredictions:
    """Run the QA model over the windows (``arrays``, from ``feature_arrays``) and pick each
    question's n-best answers (v2.0: or none, by ``answers.null_threshold``)."""
    from bertkit.tasks.squad_predict import compute_predictions

    logits = run(model, arrays, ["start_logits", "end_logits"], desc=desc)  # 2 x (F, T)
    return compute_predictions(examples, features, logits["start_logits"], logits["end_logits"],
                               answers.n_best(N_BEST_SIZE), answers.max_answer_length, version_2,
                               answers.null_threshold)


def feature_arrays(tokenizer: BertTokenizer, features: list[SquadFeature]) -> dict[str, np.ndarray]:
    """input_ids, token_type_ids, attention_mask (F, T) padded to the longest window; training
    features add start_positions, end_positions (F,)."""
    arrays = tokenizer.pad([f.encoding for f in features], return_tensors="np")
    if features and features[0].start_position is not None:
        arrays["start_positions"] = np.array([f.start_position for f in features], dtype=np.int64)
        arrays["end_positions"] = np.array([f.end_position for f in features], dtype=np.int64)
    return arrays


def _has_answers(dataset: dict[str, Any], name: str) -> bool:
    """Whether the questions can be scored: every one has gold answers (or, v2.0, is unanswerable);
    False when none has; a file with some of each is an error."""
    questions = [qa for article in dataset["data"] for p in article["paragraphs"] for qa in p["qas"]]
    scorable = [bool(qa.get("answers")) or bool(qa.get("is_impossible")) for qa in questions]
    if all(scorable):
        return True
    if not any(scorable):
        return False
    missing = next(qa["id"] for qa, ok in zip(questions, scorable) if not ok)
    raise BertkitError(f"{name}: {scorable.count(False)} of {len(questions)} questions have no answers "
                       f"(e.g. {missing!r}): give all of them answers, or none (to predict only)")


def _note(message: str) -> None:
    """A line on stderr, from the main process only."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr)


# --- command line -----------------------------------------------------------------------------


def add_squad_command(finetune: argparse._SubParsersAction) -> None:
    """Register ``bertkit finetune squad``."""
    from bertkit.tasks.finetune import add_finetune_options

    p = finetune.add_parser("squad", help="SQuAD v1.1 / v2.0 question answering (Google's run_squad.py)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, type=Path, metavar="FILE", help="SQuAD JSON to train on")
    p.add_argument("--predict", type=Path, metavar="FILE",
                   help="SQuAD JSON to predict at every evaluation and score (when it has answers)")
    p.add_argument("--version-2", action="store_true", help="SQuAD 2.0: unanswerable questions, null odds")
    p.add_argument("--heldout-articles", type=float, metavar="FRACTION",
                   help="train on the other articles of --train and predict this fraction of them instead of "
                        "--predict (a deterministic split by article title)")
    p.add_argument("--split-seed", type=int, default=0, help="with --heldout-articles: which split (default: 0)")
    d = SquadConfig()
    p.add_argument("--max-seq-length", type=int, default=d.max_seq_length, help="default: %(default)s")
    p.add_argument("--doc-stride", type=int, default=d.doc_stride,
                   help="word pieces between context windows (default: %(default)s)")
    p.add_argument("--max-query-length", type=int, default=d.max_query_length,
                   help="longer questions keep their first pieces (default: %(default)s)")
    a = AnswerArgs()
    p.add_argument("--n-best-size", type=int, help=f"candidates per question (default: {N_BEST_SIZE})")
    p.add_argument("--max-answer-length", type=int, default=a.max_answer_length,
                   help="in word pieces (default: %(default)s)")
    p.add_argument("--null-score-diff-threshold", type=float, default=a.null_threshold,
                   help="v2.0, a --predict file without answers: predict no answer when null odds exceed this "
                        "(with answers the best threshold is searched, as best_f1_thresh) (default: %(default)s)")
    add_finetune_options(p, SQUAD_DEFAULTS)
    lr, batch, epochs = (p.get_default(k) for k in ("learning_rate", "batch_size", "epochs"))
    p.epilog = (f"Training defaults are Google's run_squad.py flags: batch {batch}, learning rate {lr:g}, "
                f"{epochs:g} epochs, 10% warmup; an epoch is one pass over the training windows.")
    p.set_defaults(func=cmd_squad)


def cmd_squad(ns: argparse.Namespace) -> None:
    from bertkit.tasks.finetune import finetune_args, report, run_finetune
    from bertkit.tokenizer import load_tokenizer

    if ns.do_predict:
        raise BertkitError("--do-predict: squad predicts the --predict file at every evaluation; there is no "
                           "separate test set")
    config = SquadConfig(ns.max_seq_length, ns.doc_stride, ns.max_query_length)
    answers = AnswerArgs(ns.n_best_size, ns.max_answer_length, ns.null_score_diff_threshold)
    files = read_squad_files(ns.train, ns.predict, ns.heldout_articles, ns.split_seed)
    task = SquadTask(files, load_tokenizer(ns.model, lower_case=ns.lower_case), config, answers, ns.version_2)
    fa, train, optim = finetune_args(ns, task.num_train)
    report(run_finetune(task, fa, train, optim), task.main_metric)
