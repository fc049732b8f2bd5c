"""The training loop's arguments: two small dataclasses, checked when made.

``TrainArgs`` says how to run (batch, precision, steps, checkpoints); ``OptimizerArgs`` says how
to update (optimizer, learning-rate schedule, clipping). Both are task-agnostic: pretraining and
fine-tuning build them from their own command lines and pass them to ``Trainer`` explicitly.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertkit.errors import BertkitError

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "google_adam", "lamb")
SHARDING = ("ddp", "fsdp")


@dataclass
class TrainArgs:
    output: Path  # run directory: checkpoints/, metrics.jsonl, the final model
    batch_size: int = 256  # global batch: sequences per optimizer step, all ranks together
    micro_batch_size: int | None = None  # sequences per forward/backward on one rank (default: all of its share)
    max_steps: int | None = None  # optimizer steps to make; with max_time, whichever comes first
    max_time: float | None = None  # wall-clock budget in seconds; the LR decays with elapsed / budget
    seed: int = 12345  # model init, dropout, data order
    precision: str = "fp32"  # fp32; bf16 autocast (CPU, GPU); fp16 autocast + dynamic loss scaling (GPU)
    log_every: int = 10  # steps between metrics.jsonl lines
    save_every: int = 1000  # steps between checkpoints (0: only at exit)
    keep_checkpoints: int = 3  # newest checkpoints kept
    grad_checkpointing: bool = False  # recompute each Transformer block in the backward pass
    compile: bool = False  # torch.compile the model
    sharding: str = "ddp"  # with several processes: "ddp" (replicas) or "fsdp" (sharded parameters)
    max_bad_steps: int = 5  # consecutive non-finite losses tolerated (each step skipped) before stopping
    device: str | None = None  # default: this rank's GPU when there is one, else CPU
    progress: bool = True  # show a progress bar (main rank, on a terminal)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        _positive(self, "batch_size", "log_every", "keep_checkpoints", "max_bad_steps")
        if self.micro_batch_size is not None:
            _positive(self, "micro_batch_size")
            if self.batch_size % self.micro_batch_size:
                raise BertkitError(f"--batch-size {self.batch_size} is not a multiple of "
                                   f"--micro-batch-size {self.micro_batch_size}")
        if self.max_steps is None and self.max_time is None:
            raise BertkitError("say how long to train: --max-steps, --epochs or --max-time")
        if self.max_steps is not None:
            _positive(self, "max_steps")
        if self.max_time is not None and not self.max_time > 0:
            raise BertkitError(f"--max-time must be positive seconds, not {self.max_time!r}")
        if self.save_every < 0:
            raise BertkitError(f"--save-every must be >= 0, not {self.save_every}")
        _choice("--precision", self.precision, PRECISIONS)
        _choice("sharding", self.sharding, SHARDING)

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per rank and step, so that all ranks together make one global batch."""
        if self.batch_size % world_size:
            raise BertkitError(f"--batch-size {self.batch_size} cannot be split evenly over {world_size} processes")
        per_rank = self.batch_size // world_size
        micro = self.micro_batch_size or per_rank
        if per_rank % micro:
            raise BertkitError(f"each of the {world_size} processes takes {per_rank} sequences a step, "
                               f"not a multiple of --micro-batch-size {micro}")
        return per_rank // micro

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class OptimizerArgs:
    name: str = "adamw"  # adamw (bias-corrected), google_adam (Google's AdamWeightDecay), lamb (NVIDIA's)
    learning_rate: float = 1e-4  # peak learning rate, reached at the end of warmup
    weight_decay: float = 0.01  # decoupled decay; never on LayerNorm weights or biases
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6  # Google's epsilon
    warmup_steps: int | None = None  # linear warmup; default 10% of max_steps (Google's 10k of 100k)
    max_grad_norm: float = 1.0  # clip gradients to this global norm (0: no clipping)

    def __post_init__(self) -> None:
        _choice("--optimizer", self.name, OPTIMIZERS)
        if not self.learning_rate > 0:
            raise BertkitError(f"--learning-rate must be positive, not {self.learning_rate!r}")
        if self.weight_decay < 0 or self.eps <= 0 or self.max_grad_norm < 0:
            raise BertkitError("--weight-decay and the gradient clip must be >= 0, eps > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise BertkitError(f"Adam betas must be in [0, 1), not ({self.beta1}, {self.beta2})")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise BertkitError(f"--warmup-steps must be >= 0, not {self.warmup_steps}")

    def resolved_warmup(self, max_steps: int | None) -> int:
        """The warmup in steps: as given, else 10% of max_steps; checked against max_steps."""
        if self.warmup_steps is None:
            if max_steps is None:
                raise BertkitError("--max-time without --max-steps needs --warmup-steps "
                                   "(the budget does not say how many steps will fit)")
            return max_steps // 10
        if max_steps is not None and self.warmup_steps >= max_steps and self.warmup_steps > 0:
            raise BertkitError(f"--warmup-steps {self.warmup_steps} must be less than --max-steps {max_steps}")
        return self.warmup_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive(args: object, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not isinstance(value, int) or value < 1:
            raise BertkitError(f"--{name.replace('_', '-')} must be a positive integer, not {value!r}")


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BertkitError(f"{flag} must be one of {', '.join(choices)}, not {value!r}")


# --- command-line options, shared by every training command -------------------------------------


def _default(cls: type, name: str) -> Any:
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


def add_training_options(parser: argparse.ArgumentParser, defaults: Mapping[str, Any] | None = None) -> None:
    """The loop's options (batch, schedule, precision, checkpoints); defaults are the dataclasses',
    or a command's own (``defaults``: option dest -> value, e.g. fine-tuning's batch 32)."""
    own = dict(defaults or {})
    t = lambda n: own.get(n, _default(TrainArgs, n))  # noqa: E731
    o = lambda n: own.get({"name": "optimizer"}.get(n, n), _default(OptimizerArgs, n))  # noqa: E731
    g = parser.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=t("batch_size"),
                   help=f"global batch: sequences per update, all processes together (default: {t('batch_size')})")
    g.add_argument("--micro-batch-size", type=int, help="sequences per forward/backward in one process; "
                   "gradients accumulate to the global batch (default: all of a process's share)")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=int, help="updates to make")
    length.add_argument("--epochs", type=float, default=own.get("epochs"),
                        help="passes over the data, instead of --max-steps"
                        + (f" (default: {own['epochs']:g})" if "epochs" in own else ""))
    g.add_argument("--max-time", type=float, metavar="SEC", help="wall-clock budget in seconds: the run stops "
                   "there and the learning rate decays with elapsed/budget (with --max-steps: whichever is first)")
    g.add_argument("--seed", type=int, default=t("seed"), help=f"default: {t('seed')}")
    g.add_argument("--precision", choices=PRECISIONS, default=t("precision"),
                   help="fp32; bf16 autocast (CPU or GPU); fp16 autocast with dynamic loss scaling (GPU)")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in backward (less memory)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--sharding", choices=SHARDING, default=t("sharding"),
                   help="under torchrun: ddp (a replica per process) or fsdp (sharded, for models that do not fit)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: this process's GPU if any, else CPU)")
    g = parser.add_argument_group("optimizer")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=o("name"),
                   help="adamw; google_adam (Google's AdamWeightDecay: no bias correction); lamb (NVIDIA's, "
                        "for large batches) (default: %(default)s)")
    g.add_argument("--learning-rate", type=float, default=o("learning_rate"), help="peak (default: %(default)s)")
    g.add_argument("--warmup-steps", type=int,
                   help="linear warmup, then linear decay to 0 (default: 10%% of --max-steps)")
    g.add_argument("--weight-decay", type=float, default=o("weight_decay"),
                   help="not on LayerNorm weights or biases (default: %(default)s)")
    g.add_argument("--max-grad-norm", type=float, default=o("max_grad_norm"),
                   help="clip gradients to this global norm, 0 for none (default: %(default)s)")
    g = parser.add_argument_group("logging and checkpoints")
    g.add_argument("--log-every", type=int, default=t("log_every"),
                   help="steps per metrics.jsonl line (default: %(default)s)")
    g.add_argument("--save-every", type=int, default=t("save_every"),
                   help="steps per checkpoint, 0 for only at exit (default: %(default)s)")
    g.add_argument("--keep-checkpoints", type=int, default=t("keep_checkpoints"), metavar="K",
                   help="newest checkpoints kept (default: %(default)s)")
    g.add_argument("--max-bad-steps", type=int, default=t("max_bad_steps"), metavar="K",
                   help="non-finite losses in a row (each step skipped) before the run stops (default: %(default)s)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def training_args(ns: argparse.Namespace, output: Path, max_steps: int | None) -> tuple[TrainArgs, OptimizerArgs]:
    """The dataclasses from parsed options (``max_steps`` already resolved from --epochs if given)."""
    train = TrainArgs(output=output, batch_size=ns.batch_size, micro_batch_size=ns.micro_batch_size,
                      max_steps=max_steps, max_time=ns.max_time, seed=ns.seed, precision=ns.precision,
                      log_every=ns.log_every, save_every=ns.save_every, keep_checkpoints=ns.keep_checkpoints,
                      grad_checkpointing=ns.grad_checkpointing, compile=ns.compile, sharding=ns.sharding,
                      max_bad_steps=ns.max_bad_steps, device=ns.device, progress=ns.progress)
    optim = OptimizerArgs(name=ns.optimizer, learning_rate=ns.learning_rate, weight_decay=ns.weight_decay,
                          warmup_steps=ns.warmup_steps, max_grad_norm=ns.max_grad_norm)
    return train, optim
