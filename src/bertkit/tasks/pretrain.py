"""``bertkit pretrain``: masked LM + next sentence pretraining, from scratch or from any checkpoint.

The recipe: open the data (``bertkit data create`` output or Google TFRecords), build the model
(``--model-config``: a preset or a ``bert_config.json``; or ``--init``: the weights of any checkpoint
bertkit reads, for continued pretraining), check the data against it, and run the shared
``Trainer`` with ``PretrainingObjective``. The finished model is written to ``--output`` in
bertkit's format (``bertkit.json``, ``model.safetensors``, ``vocab.txt``), which every command
loads; the run's checkpoints, ``metrics.jsonl`` and TensorBoard files are beside it.

``--init`` vs ``--resume``: ``--init M`` starts a *new* run from M's weights (fresh optimizer,
schedule from step 0); ``--resume`` continues *this* run (``--output``) from its last checkpoint,
exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bertkit.config import BertConfig, preset
from bertkit.errors import BertkitError
from bertkit.training.args import (
    OptimizerArgs,
    TrainArgs,
    add_training_options,
    training_args,
)

if TYPE_CHECKING:  # torch and the loop are imported when a run starts, not when the CLI parses
    from torch import nn

    from bertkit.training.loop import TrainState

PHASES = """\
two phases, as Google recommends (90% of the steps at length 128, then 10% at 512):
  bertkit pretrain --data DATA128 --model-config base --output PHASE1 --max-steps 900000 ...
  bertkit pretrain --init PHASE1 --data DATA512 --max-seq-length 512 --output PHASE2 --max-steps 100000 ...
(phase 2 starts from phase 1's weights with a fresh optimizer and warmup, as Google's and NVIDIA's
recipes do; make DATA512 with `bertkit data create --max-seq-length 512`).

several processes or nodes (DDP; --sharding fsdp for models that do not fit one device):
  torchrun --nproc-per-node 8 -m bertkit pretrain ...
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m bertkit pretrain ...
--batch-size is the global batch: the same flags train on the same batches on any number of
processes (the losses agree up to float rounding, and dropout masks differ).
"""
DESCRIPTION = """\
Masked LM + next sentence pretraining, from scratch (--model-config) or from any checkpoint's
weights (--init: a new run with a fresh optimizer). --resume continues the run in --output
exactly where it stopped. The finished model is saved in --output in bertkit's format."""


@dataclass
class PretrainArgs:
    data: Path  # a `bertkit data create` directory, or Google TFRecord files (file, directory or glob)
    model_config: str | None = None  # a new model: a preset name (base, L-4_H-256, ...) or a bert_config.json
    init: Path | None = None  # or start from these weights (any format bertkit reads): continued pretraining
    resume: bool = False  # continue the run in the output directory from its last checkpoint
    max_seq_length: int | None = None  # checked against the data's (the data fixes it)

    def __post_init__(self) -> None:
        if self.model_config is not None and self.init is not None:
            raise BertkitError("give --model-config (a new model) or --init (existing weights), not both: "
                               "--init takes the model's shape from its checkpoint")
        if self.model_config is None and self.init is None and not self.resume:
            raise BertkitError("say which model to train: --model-config PRESET|bert_config.json, or --init MODEL")


@dataclass
class PretrainResult:
    state: TrainState  # the loop's counters at the end
    model_dir: Path | None  # the saved bertkit model (main process of a finished run), else None
    main: bool  # this is the main process


def resolve_config(name: str) -> BertConfig:
    """A preset name or a bert_config.json / config.json path."""
    path = Path(name)
    if path.suffix == ".json" or path.is_file():
        return BertConfig.from_json_file(path)
    return preset(name)


def open_data(path: str | Path):
    """The pretraining data (imported here: the data package is only needed to train)."""
    from bertkit.data.dataset import PretrainingDataset

    return PretrainingDataset(path)


def steps_for_epochs(data: str | Path, epochs: float, batch_size: int) -> int:
    """Updates that make ``epochs`` passes over the data with a global batch of ``batch_size``."""
    return max(1, int(epochs * len(open_data(data)) // batch_size))


def check_data(dataset, config: BertConfig, max_seq_length: int | None, vocab: dict[str, int] | None) -> None:
    """Refuse data the model cannot train on, before the first step."""
    dataset.check_vocab(config.vocab_size, vocab)  # ids >= vocab size, or another vocabulary
    length = dataset.max_seq_length
    if max_seq_length is not None and max_seq_length != length:
        raise BertkitError(f"--max-seq-length {max_seq_length}, but the data's sequences are {length} long "
                           "(make data of that length with `bertkit data create --max-seq-length`)")
    if length > config.max_position_embeddings:
        raise BertkitError(f"the data's sequences are {length} long; the model has only "
                           f"{config.max_position_embeddings} positions")


def run_pretraining(p: PretrainArgs, train: TrainArgs, optim: OptimizerArgs) -> PretrainResult:
    """Pretrain (in every process torchrun starts); the finished model is saved to ``train.output``."""
    from bertkit.training import distributed as D
    from bertkit.training.checkpoint import resume_point, seed_everything
    from bertkit.training.loop import Trainer
    from bertkit.training.objective import PretrainingObjective

    d = D.init_distributed(train.device)
    try:
        checkpoint = resume_point(train.output, p.resume)
        dataset = open_data(p.data)
        seed_everything(train.seed)  # the same initial weights in every process
        model, origin = _initial_model(p, checkpoint)
        check_data(dataset, model.config, p.max_seq_length, _vocab(origin["vocab_file"]))
        meta = {"task": "pretrain", "model_config": model.config.to_dict(), **origin}
        trainer = Trainer(model, PretrainingObjective(), dataset.iterate(train.seed, d.rank, d.world_size),
                          train, optim, d, meta)
        if checkpoint is not None:
            trainer.resume(checkpoint)
        state = trainer.fit()
        saved = trainer.export(train.output, origin.get("vocab_file"), origin.get("do_lower_case")) \
            if state.finished else None
        return PretrainResult(state, saved, d.main)
    finally:
        D.shutdown(d)


def _initial_model(p: PretrainArgs, checkpoint: Path | None) -> tuple[nn.Module, dict]:
    """The model to train and where its vocabulary comes from ({vocab_file, do_lower_case, init})."""
    from bertkit.convert.load import empty_model, load_model
    from bertkit.model import build_model
    from bertkit.training.checkpoint import read_meta

    data_vocab, data_lower = _data_vocab(p.data)
    if checkpoint is not None:
        meta = read_meta(checkpoint)
        config = BertConfig.from_dict(meta["model_config"], source=str(checkpoint))
        if p.model_config is not None and resolve_config(p.model_config).to_dict() != config.to_dict():
            raise BertkitError(f"--model-config {p.model_config} differs from the model of the run being resumed")
        origin = {k: meta.get(k) for k in ("vocab_file", "do_lower_case", "init")}
        return empty_model(config, "pretraining"), origin  # the weights come from the checkpoint
    if p.init is not None:
        model = load_model(p.init, "pretraining", init_head=True).train()
        info = model.load_info
        vocab = data_vocab or (str(info.vocab_file) if info.vocab_file else None)
        lower = data_lower if data_lower is not None else info.do_lower_case
        return model, {"vocab_file": vocab, "do_lower_case": lower, "init": str(p.init)}
    model = build_model(resolve_config(p.model_config), "pretraining")
    return model, {"vocab_file": data_vocab, "do_lower_case": data_lower, "init": None}


def _data_vocab(data: Path) -> tuple[str | None, bool | None]:
    """The data directory's vocab.txt and lower-casing, when it records them."""
    directory = Path(data)
    vocab = directory / "vocab.txt" if directory.is_dir() else None
    manifest = directory / "manifest.json" if directory.is_dir() else None
    lower = None
    if manifest is not None and manifest.is_file():
        lower = json.loads(manifest.read_text(encoding="utf-8")).get("parameters", {}).get("do_lower_case")
    return (str(vocab.resolve()) if vocab is not None and vocab.is_file() else None), lower


def _vocab(vocab_file: str | None) -> dict[str, int] | None:
    from bertkit.tokenizer import load_vocab

    return load_vocab(vocab_file) if vocab_file else None


# --- command line -----------------------------------------------------------------------------


def add_pretrain_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bertkit pretrain``."""
    p = subparsers.add_parser(
        "pretrain", help="pretrain BERT (masked LM + next sentence) from scratch or from a checkpoint",
        description=DESCRIPTION, epilog=PHASES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, metavar="DIR",
                   help="pretraining data: a `bertkit data create` directory or Google TFRecords")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model-config", metavar="PRESET|JSON",
                       help="a new model: base, large, L-4_H-256, ... or a bert_config.json")
    model.add_argument("--init", type=Path, metavar="MODEL",
                       help="start from a checkpoint's weights (Google TF, HF or bertkit): continued pretraining")
    p.add_argument("--output", required=True, type=Path, metavar="DIR",
                   help="run directory: final model, checkpoints/, metrics.jsonl, tensorboard/")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--max-seq-length", type=int, metavar="N", help="check: the data's sequence length (the data fixes it)")
    add_training_options(p)
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(ns: argparse.Namespace) -> None:
    p = PretrainArgs(data=ns.data, model_config=ns.model_config, init=ns.init, resume=ns.resume,
                     max_seq_length=ns.max_seq_length)
    max_steps = ns.max_steps if ns.epochs is None else steps_for_epochs(ns.data, ns.epochs, ns.batch_size)
    train, optim = training_args(ns, ns.output, max_steps)
    result = run_pretraining(p, train, optim)
    if not result.main:
        return
    s = result.state
    if result.model_dir is not None:
        print(f"trained {s.step} steps ({s.tokens:,} tokens, {s.elapsed:.0f} s); model saved to {result.model_dir}")
    else:
        print(f"stopped at step {s.step}; continue with the same command and --resume")


def add_plot_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bertkit plot``."""
    p = subparsers.add_parser("plot", help="write PNG training curves of a run (needs matplotlib)")
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="a training run directory (holds metrics.jsonl)")
    p.add_argument("--output", type=Path, metavar="FILE", help="default: RUN_DIR/training_curves.png")
    p.set_defaults(func=cmd_plot)


def cmd_plot(ns: argparse.Namespace) -> None:
    from bertkit.training.plot import plot_run

    print(f"wrote {plot_run(ns.run, ns.output)}")
