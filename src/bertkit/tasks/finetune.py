"""Fine-tuning, the part every task shares: seeds, evaluation during training, the best model.

A task (``classify``, ``squad``, ``ner``, ``nq``) supplies a ``FinetuneTask``: its head, the
training features as padded arrays, an ``Objective`` for the shared ``Trainer``, and how to score
the dev set and write predictions. ``run_finetune`` then, for each seed:

1. loads ``--model`` (any format) with the task's head, creating the head when the checkpoint
   has none and refusing one made for another label set;
2. trains with the shared loop (optimizers, precision, accumulation, torchrun, atomic
   checkpoints, ``--resume``), evaluating on dev every ``eval_every`` steps and at the end;
3. keeps the best model by the task's main dev metric in ``RUN/best/`` (written to a temporary
   directory and swapped in, so an interrupted run never leaves a half-written best model);
4. at the end saves the best model in ``RUN`` in bertkit's format, writes its dev metrics to
   ``RUN/eval_results.json`` and the task's prediction files.

With several seeds each run is ``OUTPUT/seed-N`` and ``OUTPUT/eval_results.json`` holds every
run's metrics and their mean, std and median. A seed whose run has finished is not trained again
when the command is repeated with ``--resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bertkit.errors import BertkitError
from bertkit.io import atomic_write_text, replace_dir, restore_dir
from bertkit.training.args import (
    OptimizerArgs,
    TrainArgs,
    add_training_options,
    training_args,
)

if TYPE_CHECKING:
    from torch import nn

    from bertkit.training.distributed import Dist
    from bertkit.training.loop import Trainer
    from bertkit.training.objective import Objective

RESULTS_FILE = "eval_results.json"
BEST_DIR = "best"
Runner = Callable[..., dict[str, np.ndarray]]  # tasks.inference.run_model with batch/precision/device bound

# Google's fine-tuning recipe (run_classifier.py / run_squad.py) as the defaults of every task.
FINETUNE_DEFAULTS = {"batch_size": 32, "learning_rate": 2e-5, "epochs": 3.0, "save_every": 0,
                     "keep_checkpoints": 1, "log_every": 20}


class FinetuneTask(Protocol):
    name: str  # shown in messages and kept in checkpoints' meta
    head: str  # classification, token_classification or qa
    main_metric: str  # the dev metric the best model is chosen by (higher is better; when evaluate()
    # does not return it, e.g. a dev file without answers, the latest model is kept)

    def config_overrides(self) -> dict[str, Any]:
        """BertConfig fields the head needs (num_labels, label_names)."""

    def check_model(self, model: nn.Module) -> None:
        """Refuse a model whose existing head does not fit the data (never reshape silently)."""

    def train_features(self) -> dict[str, np.ndarray]:
        """The training examples as equally long arrays, token features padded to one width."""

    def objective(self) -> Objective:
        """The loss the shared loop minimises."""

    def evaluate(self, model: nn.Module, run: Runner) -> tuple[dict[str, float], Any]:
        """Dev metrics (flat name -> float) and the dev predictions, for ``write_predictions``."""

    def write_predictions(self, out: Path, model: nn.Module, run: Runner, dev_predictions: Any,
                          do_predict: bool) -> list[Path]:
        """Write the dev predictions and, with do_predict, the test set's; the files written. A task
        that scores a labelled test set here leaves those scores in ``self.test_metrics`` (flat
        name -> float, e.g. test_f1) and they join eval_results.json."""


@dataclass
class FinetuneArgs:
    model: Path  # the starting checkpoint: Google TF, HF or bertkit
    output: Path  # the run directory (several seeds: one seed-N directory each)
    seeds: list[int] | None = None  # run each seed; None: the training --seed only
    epochs: float | None = 3.0  # passes over the training data (unless max_steps is given)
    eval_every: int | None = None  # steps between dev evaluations (default: once per epoch)
    eval_batch_size: int = 64
    do_predict: bool = False  # also predict the test set
    resume: bool = False  # continue interrupted runs in --output
    lower_case: bool | None = None  # tokenizer casing (default: the checkpoint's)
    config_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. hidden_act

    def __post_init__(self) -> None:
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise BertkitError(f"--seeds must list distinct seeds, not {self.seeds}")
        if self.eval_every is not None and self.eval_every < 1:
            raise BertkitError(f"--eval-every must be at least 1, not {self.eval_every}")
        if self.eval_batch_size < 1:
            raise BertkitError(f"--eval-batch-size must be at least 1, not {self.eval_batch_size}")


@dataclass
class FinetuneResult:
    runs: list[dict[str, Any]]  # each seed's eval_results.json
    summary: dict[str, Any] | None  # several seeds: mean/std/median per metric
    output: Path
    main: bool  # this is the main process
    stopped: bool = False  # interrupted before the end (resume with --resume)


def run_finetune(task: FinetuneTask, fa: FinetuneArgs, train: TrainArgs, optim: OptimizerArgs) -> FinetuneResult:
    """Fine-tune ``task`` once per seed (in every process torchrun starts)."""
    from bertkit.training import distributed as D

    seeds = fa.seeds or [train.seed]
    d = D.init_distributed(train.device)
    runs: list[dict[str, Any]] = []
    try:
        for seed in seeds:
            out = fa.output if len(seeds) == 1 else fa.output / f"seed-{seed}"
            result = _finished(out) if fa.resume else None
            if result is None:
                result = _run_seed(task, fa, dataclasses.replace(train, seed=seed, output=out), optim, d)
            if result is None:  # stopped by a signal
                return FinetuneResult(runs, None, fa.output, d.main, stopped=True)
            runs.append(result)
        summary = _summarize(fa.output, seeds, runs, task.main_metric, d) if len(seeds) > 1 else None
        return FinetuneResult(runs, summary, fa.output, d.main)
    finally:
        D.shutdown(d)


def _finished(out: Path) -> dict[str, Any] | None:
    path = out / RESULTS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() and (out / "bertkit.json").is_file() else None


def _run_seed(task: FinetuneTask, fa: FinetuneArgs, train: TrainArgs, optim: OptimizerArgs,
              d: Dist) -> dict[str, Any] | None:
    from bertkit.convert.load import load_model
    from bertkit.tasks.inference import run_model
    from bertkit.training.batches import ArrayBatches
    from bertkit.training.checkpoint import (
        latest_checkpoint,
        resume_point,
        seed_everything,
    )
    from bertkit.training.loop import Trainer

    checkpoint = resume_point(train.output, fa.resume and latest_checkpoint(train.output) is not None)
    if checkpoint is None and (train.output / RESULTS_FILE).exists():
        raise BertkitError(f"{train.output} already holds a finished run: choose another --output")
    seed_everything(train.seed)  # the same new head in every process
    model = load_model(fa.model, task.head, init_head=True, **fa.config_overrides, **task.config_overrides())
    task.check_model(model)
    info = model.load_info
    origin = {"vocab_file": str(info.vocab_file) if info.vocab_file else None,
              "do_lower_case": fa.lower_case if fa.lower_case is not None else info.do_lower_case}
    run = partial(run_model, batch_size=fa.eval_batch_size, precision=train.precision, device=d.device)
    features = task.train_features()
    batches = ArrayBatches(features, train.seed, d.rank, d.world_size)
    every = fa.eval_every or max(1, len(batches.features["input_ids"]) // train.batch_size)
    keeper = BestKeeper(task, run, train.output, every, d)
    meta = {"task": task.name, "model_config": model.config.to_dict(), "init": str(fa.model), **origin}
    trainer = Trainer(model.train(), task.objective(), batches, train, optim, d, meta, after_step=keeper)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    keeper.restore()
    if not trainer.fit().finished:
        return None
    return _finish(task, fa, trainer, keeper, origin, run)


class BestKeeper:
    """The loop's after-step hook: evaluates on dev every ``every`` steps and at the last step,
    logs the metrics (``eval_<name>`` in metrics.jsonl, ``eval/`` in TensorBoard) and keeps the
    best model so far in ``RUN/best``."""

    def __init__(self, task: FinetuneTask, run: Runner, output: Path, every: int, d: Dist) -> None:
        self.task, self.run, self.output, self.every, self.dist = task, run, output, every, d
        self.best: dict[str, Any] | None = None  # the best evaluation's metrics, with "step"
        self.predictions: Any = None  # its dev predictions (None after a resume: evaluated again at the end)

    def restore(self) -> None:
        """Pick up the best model of an interrupted run."""
        directory = self.output / BEST_DIR
        restore_dir(directory)
        if (directory / RESULTS_FILE).is_file():
            self.best = json.loads((directory / RESULTS_FILE).read_text(encoding="utf-8"))

    def __call__(self, trainer: Trainer) -> None:
        step = trainer.state.step
        if step % self.every and not trainer.reached_end():
            return
        metrics, predictions = self.task.evaluate(trainer.model, self.run)
        trainer.monitor.log({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}}, group="eval")
        score = metrics.get(self.task.main_metric)  # None: nothing to score by (no gold answers): keep the latest
        if self.best is not None and score is not None and not score > self.best[self.task.main_metric]:
            return
        self.best, self.predictions = {**metrics, "step": step}, predictions
        tmp = self.output / f".{BEST_DIR}.tmp"
        if self.dist.main and tmp.exists():
            shutil.rmtree(tmp)
        saved = trainer.export(tmp, trainer.meta.get("vocab_file"), trainer.meta.get("do_lower_case"))
        if saved is not None:
            atomic_write_text(tmp / RESULTS_FILE, json.dumps(self.best, indent=2) + "\n")
            replace_dir(tmp, self.output / BEST_DIR)


def _finish(task: FinetuneTask, fa: FinetuneArgs, trainer: Trainer, keeper: BestKeeper, origin: dict[str, Any],
            run: Runner) -> dict[str, Any]:
    """Put the best weights back, save the model in RUN, write eval_results.json and predictions."""
    from bertkit.convert.load import load_model
    from bertkit.training import distributed as D

    out = trainer.args.output
    D.barrier(trainer.dist)
    best = load_model(out / BEST_DIR, task.head).to(trainer.device)
    metrics, predictions = keeper.best, keeper.predictions
    if predictions is None:  # the best evaluation happened before a resume
        metrics, predictions = task.evaluate(best, run)
    results = {**metrics, "step": keeper.best["step"], "steps": trainer.state.step,
               "seed": trainer.args.seed, "task": task.name}
    if trainer.dist.main:
        task.write_predictions(out, best, run, predictions, fa.do_predict)
        results.update(getattr(task, "test_metrics", {}))
        for name in ("model.safetensors", "vocab.txt", "bertkit.json"):  # bertkit.json last: the model is complete
            if (out / BEST_DIR / name).is_file():
                shutil.copyfile(out / BEST_DIR / name, out / f".{name}.tmp")
                (out / f".{name}.tmp").replace(out / name)
        atomic_write_text(out / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
        shutil.rmtree(out / BEST_DIR)
    D.barrier(trainer.dist)
    return results


def _summarize(output: Path, seeds: Sequence[int], runs: Sequence[Mapping[str, Any]], main_metric: str,
               d: Dist) -> dict[str, Any]:
    from bertkit.tasks.metrics import summarize_seeds

    numbers = [{k: v for k, v in r.items() if isinstance(v, float)} for r in runs]
    summary = {"seeds": list(seeds), "main_metric": main_metric, "summary": summarize_seeds(numbers),
               "runs": list(runs)}
    if d.main:
        atomic_write_text(output / RESULTS_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


# --- command line: the options every fine-tuning command shares --------------------------------


def add_finetune_options(p: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """--model/--output/--seeds/... and the loop's options with Google's fine-tuning defaults
    (``defaults``: a task's own, over FINETUNE_DEFAULTS, e.g. run_squad.py's learning rate)."""
    from bertkit.config import ACTIVATIONS

    p.add_argument("--model", required=True, type=Path, metavar="PATH",
                   help="the pretrained (or fine-tuned) checkpoint: Google TF, HF or bertkit")
    p.add_argument("--output", required=True, type=Path, metavar="DIR",
                   help="run directory: the best model, eval_results.json, predictions, metrics.jsonl")
    p.add_argument("--seeds", metavar="S1,S2,...", type=_int_list,
                   help="train once per seed (OUTPUT/seed-N) and report mean, std and median")
    p.add_argument("--eval-every", type=int, metavar="STEPS", help="evaluate on dev every STEPS updates "
                   "(default: once per epoch); the best model by the task's main metric is kept")
    p.add_argument("--eval-batch-size", type=int, default=64, help="default: %(default)s")
    p.add_argument("--do-predict", action="store_true", help="also predict the test set")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs in --output")
    p.add_argument("--hidden-act", choices=sorted(ACTIVATIONS), help="override the checkpoint's activation")
    case = p.add_mutually_exclusive_group()
    case.add_argument("--cased", dest="lower_case", action="store_false", default=None,
                      help="keep case and accents (default: from the checkpoint/vocab)")
    case.add_argument("--uncased", dest="lower_case", action="store_true", help="lower-case and strip accents")
    add_training_options(p, {**FINETUNE_DEFAULTS, **(defaults or {})})


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None


def finetune_args(ns: argparse.Namespace, num_train_examples: int) -> tuple[FinetuneArgs, TrainArgs, OptimizerArgs]:
    """The dataclasses from parsed options; --epochs becomes steps over ``num_train_examples``."""
    fa = FinetuneArgs(model=ns.model, output=ns.output, seeds=ns.seeds, epochs=ns.epochs, eval_every=ns.eval_every,
                      eval_batch_size=ns.eval_batch_size, do_predict=ns.do_predict, resume=ns.resume,
                      lower_case=ns.lower_case,
                      config_overrides={"hidden_act": ns.hidden_act} if ns.hidden_act else {})
    max_steps = ns.max_steps
    if max_steps is None and ns.epochs is not None:
        max_steps = max(1, int(np.ceil(ns.epochs * num_train_examples / ns.batch_size)))
    train, optim = training_args(ns, ns.output, max_steps)
    return fa, train, optim


def report(result: FinetuneResult, main_metric: str) -> None:
    """Print a finished command's outcome (main process)."""
    if not result.main:
        return
    if result.stopped:
        print(f"stopped; continue with the same command and --resume (output {result.output})")
        return
    if result.summary is None:
        r = result.runs[0]
        shown = {k: round(v, 4) for k, v in r.items() if isinstance(v, float)}
        print(f"best at step {r['step']} of {r['steps']}: {json.dumps(shown)}")
    else:
        for name, s in result.summary["summary"].items():
            print(f"{name}: mean {s['mean']:.4f} ± {s['std']:.4f} (median {s['median']:.4f}, "
                  f"{len(s['values'])} seeds)")
    print(f"model and results in {result.output}")


def add_finetune_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bertkit finetune classify|...``."""
    from bertkit.tasks.finetune_classify import add_classify_command
    from bertkit.tasks.finetune_ner import add_ner_command
    from bertkit.tasks.finetune_nq import add_nq_command
    from bertkit.tasks.finetune_squad import add_squad_command

    p = subparsers.add_parser("finetune", help="fine-tune on a task: classify (GLUE, custom), ner, nq, squad, ...",
                              description="Fine-tune a pretrained checkpoint on a task; see each task's --help.")
    tasks = p.add_subparsers(dest="task_command", required=True, metavar="TASK")
    add_classify_command(tasks)
    add_ner_command(tasks)
    add_nq_command(tasks)
    add_squad_command(tasks)
