"""The training loop, shared by pretraining and fine-tuning: ``Trainer(model, objective, batches, ...)``.

One step makes one optimizer update from one global batch:

1. take ``accumulation`` micro-batches from this rank's ``batches``;
2. add up the objective's term weights over all of them and all ranks (one small all-reduce), so
   each micro-batch's loss is its share of the global batch's loss (see ``objective``);
3. forward and backward each micro-batch under autocast; DDP all-reduces gradients only on the
   last one (``gradient_sync``);
4. a non-finite loss (or, without a loss scaler, gradient norm) skips the update with a warning;
   ``max_bad_steps`` in a row stop the run;
5. otherwise unscale (fp16), clip to the global norm, update, set the next learning rate.

The data, all RNGs, the optimizer and the loop's counters go into every checkpoint, so a resumed
run on CPU makes exactly the updates the uninterrupted run makes. SIGINT/SIGTERM end the run after
the current step, with a checkpoint; a second SIGINT interrupts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from bertkit.errors import BertkitError
from bertkit.training import distributed as D
from bertkit.training.args import OptimizerArgs, TrainArgs
from bertkit.training.checkpoint import (
    kill_hook,
    latest_checkpoint,
    load_checkpoint,
    remove_incomplete,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from bertkit.training.memory import (
    free_memory,
    largest_fitting,
    micro_batch_candidates,
    oom_advice,
)
from bertkit.training.monitor import Monitor, truncate_metrics
from bertkit.training.objective import Objective, normalize
from bertkit.training.optim import build_optimizer
from bertkit.training.precision import autocast, check_precision, grad_scaler
from bertkit.training.schedule import LinearSchedule


class Batches(Protocol):
    """A rank's endless stream of training examples, resumable.

    ``PretrainingDataset.iterate(seed, rank, world_size)`` is one; ``batches.ArrayBatches`` serves
    examples held in memory.
    """

    def next_batch(self, batch_size: int) -> Mapping[str, np.ndarray]:
        """The next ``batch_size`` examples, each feature with a leading (batch_size,) axis."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass
class TrainState:
    """The loop's counters, saved in every checkpoint."""

    step: int = 0  # optimizer updates made
    elapsed: float = 0.0  # seconds of training so far, over all sessions (the --max-time clock)
    bad_steps: int = 0  # steps skipped in a row for a non-finite loss
    skipped: int = 0  # steps skipped in all
    tokens: int = 0  # tokens trained on, all ranks
    finished: bool = False  # reached max_steps / max_time (rather than stopped by a signal)


class Trainer:
    """Trains ``model`` on ``objective`` over ``batches``; ``fit()`` runs to the end, ``resume()`` first."""

    def __init__(self, model: nn.Module, objective: Objective, batches: Batches, args: TrainArgs,
                 optim: OptimizerArgs, dist: D.Dist | None = None, meta: dict[str, Any] | None = None,
                 after_step: Callable[[Trainer], None] | None = None) -> None:
        """meta: JSON-able facts a checkpoint's meta.json keeps for the task (e.g. the model config).
        after_step: called on every rank after each update (and its logging), before any checkpoint
        of that step; fine-tuning evaluates there and keeps its best model."""
        self.args, self.optim_args, self.objective, self.batches = args, optim, objective, batches
        self.after_step = after_step
        self.dist = dist or D.Dist()
        self.meta = meta or {}
        self.device = self.dist.device
        check_precision(args.precision, self.device)
        self.accumulation = args.accumulation(self.dist.world_size)
        self.micro = args.batch_size // self.dist.world_size // self.accumulation
        self.model = model.to(self.device).train()
        if args.grad_checkpointing:
            D.apply_grad_checkpointing(self.model)
        self.engine = D.wrap_model(self.model, self.dist, args.sharding)
        if args.compile:
            self.engine = torch.compile(self.engine)
        self.optimizer = build_optimizer(self.model, optim)
        self.schedule = LinearSchedule(self.optimizer, optim.learning_rate, optim.resolved_warmup(args.max_steps),
                                       args.max_steps, args.max_time)
        self.scaler = grad_scaler(args.precision, self.device)
        self.state = TrainState()
        self.monitor = Monitor(args.output, False, args.max_steps, args.max_time)
        self._saved_rng: dict[str, Any] | None = None
        self._stop = False
        self._metric_terms: dict[str, str] = {}
        self._last_micro: dict[str, Tensor] | None = None

    # --- running --------------------------------------------------------------------------

    def resume(self, checkpoint: Path) -> None:
        """Load a checkpoint of this run: weights, optimizer, scaler, counters, data position, RNGs."""
        shared, mine = load_checkpoint(checkpoint, self.dist.rank, self.dist.world_size)
        D.load_model_state(self.model, shared["model"])
        D.load_optimizer_state(self.model, self.optimizer, shared["optimizer"])
        if self.scaler is not None and shared.get("scaler"):
            self.scaler.load_state_dict(shared["scaler"])
        self.state = TrainState(**shared["train"])
        self.batches.load_state_dict(mine["data"])
        self._saved_rng = mine["rng"]  # set when fit() starts, after everything else that draws

    def fit(self) -> TrainState:
        """Train until max_steps / max_time (or a signal); checkpoint at exit. Returns the counters."""
        self._start()
        with self.monitor, _stop_on_signals(self):
            while not self._done():
                out_of_memory = False
                try:
                    report = self._step()
                except torch.OutOfMemoryError:
                    out_of_memory = True
                if out_of_memory:  # outside the except block, so the failed step's tensors are freed
                    raise BertkitError(self._oom_advice())
                if report is not None:
                    self._after_step(report)
            self.state.finished = self.reached_end()
            self.save()
        return self.state

    def _start(self) -> None:
        run = self.args.output
        if self.dist.main:
            run.mkdir(parents=True, exist_ok=True)
            remove_incomplete(run)
            truncate_metrics(run, self.state.step)
        if self._saved_rng is not None:
            set_rng_state(self._saved_rng, self.device)
        else:
            seed_everything(self.args.seed + self.dist.rank)
        self.monitor = Monitor(run, self.dist.main, self.args.max_steps, self.args.max_time, self.state.step,
                               self.args.progress)
        self._base_elapsed, self._session_start = self.state.elapsed, time.perf_counter()
        self._window = (time.perf_counter(), 0.0, 0.0)
        self._sync_clock()

    def _done(self) -> bool:
        return self._stop or self.reached_end()

    def reached_end(self) -> bool:
        a = self.args
        return ((a.max_steps is not None and self.state.step >= a.max_steps)
                or (a.max_time is not None and self.state.elapsed >= a.max_time))

    def _sync_clock(self) -> None:
        """Advance the budget's clock; all ranks take the slowest clock and any rank's stop signal."""
        elapsed = self._base_elapsed + time.perf_counter() - self._session_start
        if self.dist.enabled:
            clock = torch.tensor([elapsed, float(self._stop)], dtype=torch.float64, device=self.device)
            shared = D.all_reduce(clock, self.dist, "max")
            elapsed, stop = shared.tolist()
            self._stop = bool(stop)
        self.state.elapsed = elapsed

    # --- one step -------------------------------------------------------------------------

    def _step(self) -> dict[str, float] | None:
        """One update from one global batch; the step's report, or None when it was skipped."""
        lr = self.schedule.apply(self.state.step, self.state.elapsed)
        micro = [self._to_device(self.batches.next_batch(self.micro)) for _ in range(self.accumulation)]
        self._last_micro = micro[0]
        weights = self._global_weights(micro)
        report = self._report(self._all_sum(self._forward_backward(micro, weights)), weights)
        report["lr"] = lr
        if not math.isfinite(report["loss"]):
            return self._skip(report)
        report["grad_norm"] = grad_norm = self._clip()
        if self.scaler is None and not math.isfinite(grad_norm):
            return self._skip(report)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return report

    def _to_device(self, batch: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device, non_blocking=True)
                for k, v in batch.items()}

    def _global_weights(self, micro: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Each loss term's weight summed over the global batch (all micro-batches, all ranks)."""
        per = [self.objective.weights(b) for b in micro]
        keys = sorted(per[0])
        total = torch.stack([sum(p[k] for p in per).float() for k in keys])
        return dict(zip(keys, D.all_reduce(total, self.dist)))

    def _forward_backward(self, micro: list[dict[str, Tensor]], weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """Accumulate the global batch's gradient; returns this rank's sums of the loss terms and metrics."""
        eps = getattr(self.objective, "eps", {})
        sums: dict[str, Tensor] = {}
        for i, batch in enumerate(micro):
            with D.gradient_sync(self.engine, i == len(micro) - 1):
                with autocast(self.args.precision, self.device):
                    terms = self.objective(self.engine, batch)
                # DDP and FSDP average gradients over ranks; each rank's loss is its share of a sum.
                loss = normalize(terms.losses, weights, eps) * self.dist.world_size
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for name, value in terms.losses.items():
                _add(sums, f"{name}_loss", value.detach().float())
            for name, (value, term) in terms.metrics.items():
                self._metric_terms[name] = term
                _add(sums, name, value.detach().float())
            _add(sums, "tokens", _count_tokens(batch))
            _add(sums, "sequences", torch.tensor(float(len(batch["input_ids"])), device=self.device))
        return sums

    def _all_sum(self, sums: dict[str, Tensor]) -> dict[str, float]:
        keys = sorted(sums)
        total = D.all_reduce(torch.stack([sums[k] for k in keys]), self.dist)
        return dict(zip(keys, total.tolist()))

    def _report(self, totals: dict[str, float], weights: dict[str, Tensor]) -> dict[str, float]:
        """Global-batch losses (Σ / (weight + eps)) and metrics (Σ / weight), floats."""
        eps = getattr(self.objective, "eps", {})
        w = {k: float(v) for k, v in weights.items()}
        terms = [k.removesuffix("_loss") for k in totals if k.endswith("_loss")]
        report = {f"{t}_loss": totals[f"{t}_loss"] / (w[t] + eps.get(t, 0.0)) for t in terms}
        report = {"loss": sum(report.values()), **report}
        for name, term in self._metric_terms.items():
            report[name] = totals[name] / w[term] if w[term] else float("nan")
        report["tokens"], report["sequences"] = totals["tokens"], totals["sequences"]
        return report

    def _clip(self) -> float:
        """Unscale (fp16), clip to max_grad_norm; the global gradient norm before clipping."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        limit = self.optim_args.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), limit)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def _skip(self, report: dict[str, float]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.state.bad_steps += 1
        self.state.skipped += 1
        self._sync_clock()
        what = f"loss {report['loss']}" + (f", gradient norm {report['grad_norm']}" if "grad_norm" in report else "")
        self.monitor.warn(f"step {self.state.step + 1}: non-finite {what}; update skipped "
                          f"({self.state.bad_steps} in a row, the run stops at {self.args.max_bad_steps})")
        if self.state.bad_steps >= self.args.max_bad_steps:
            last = latest_checkpoint(self.args.output)
            raise BertkitError(
                f"{self.state.bad_steps} steps in a row had a non-finite loss or gradient; training stopped "
                f"after {self.state.step} updates ({'last checkpoint ' + str(last) if last else 'no checkpoint yet'}). "
                "Try a lower --learning-rate, --precision bf16 or fp32 instead of fp16, or check the data.")

    def _after_step(self, report: dict[str, float]) -> None:
        self.state.step += 1
        self.state.bad_steps = 0
        self.state.tokens += int(report["tokens"])
        start, tokens, sequences = self._window
        self._window = (start, tokens + report["tokens"], sequences + report["sequences"])
        self._sync_clock()
        seconds = time.perf_counter() - start
        self.monitor.step(self.state.step, self.state.elapsed, report["loss"],
                          self._window[1] / seconds if seconds > 0 else None)
        if self.state.step % self.args.log_every == 0 or self._done():
            self._log(report)
        if self.after_step is not None:
            self.after_step(self)
        if self.args.save_every and self.state.step % self.args.save_every == 0:
            self.save()
        kill_hook("step", self.state.step)

    def _log(self, report: dict[str, float]) -> None:
        start, tokens, sequences = self._window
        seconds = max(time.perf_counter() - start, 1e-9)
        record = {"step": self.state.step, **{k: v for k, v in report.items() if k not in ("tokens", "sequences")},
                  "tokens_per_s": tokens / seconds, "sequences_per_s": sequences / seconds,
                  "elapsed": self.state.elapsed}
        if self.scaler is not None:
            record["loss_scale"] = float(self.scaler.get_scale())
        self.monitor.log(record)
        self._window = (time.perf_counter(), 0.0, 0.0)

    # --- state ----------------------------------------------------------------------------

    def save(self) -> Path:
        """Write a checkpoint of the current step (every rank calls this)."""
        shared = {
            "model": D.model_state(self.model),
            "optimizer": D.optimizer_state(self.model, self.optimizer),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "train": dataclasses.asdict(self.state),
        }
        per_rank = {"rng": rng_state(self.device), "data": self.batches.state_dict()}
        meta = {**self.meta, "train_args": self.args.to_dict(), "optimizer_args": self.optim_args.to_dict()}
        return save_checkpoint(self.args.output, self.state.step, shared if self.dist.main else None, per_rank,
                               meta, self.dist, self.args.keep_checkpoints)

    def model_state_dict(self) -> dict[str, Tensor]:
        """The trained weights as a full state dict on every backend (FSDP: on rank 0 only)."""
        return D.model_state(self.model)

    def export(self, out: Path, vocab_file: str | Path | None, do_lower_case: bool | None) -> Path | None:
        """Save the model in bertkit's format in ``out`` (every rank calls this; the main one writes)."""
        from bertkit.convert.checkpoint import save_bertkit
        from bertkit.convert.load import empty_model

        state = self.model_state_dict()  # a collective under FSDP
        if not self.dist.main:
            return None
        model = self.model
        if D.is_fsdp(model):  # sharded: a plain copy from the gathered weights
            model = empty_model(model.config, getattr(model, "head", None))
            model.load_state_dict(state)
        if vocab_file is not None and not Path(vocab_file).is_file():
            vocab_file = None
        return save_bertkit(model, out, vocab_file, do_lower_case)

    # --- out of memory --------------------------------------------------------------------

    def _oom_advice(self) -> str:
        """Probe smaller micro-batches with the last batch; the message naming the largest that fits."""
        self.optimizer.zero_grad(set_to_none=True)
        free_memory()
        per_rank = self.args.batch_size // self.dist.world_size
        batch = self._last_micro
        best = None
        if batch is not None:
            best = largest_fitting(micro_batch_candidates(per_rank, self.micro), lambda m: self._fits(batch, m))
        return oom_advice(self.micro, best, self.args.batch_size, self.dist.world_size)

    def _fits(self, batch: dict[str, Tensor], size: int) -> bool:
        try:
            self._probe({k: v[:size] for k, v in batch.items()})
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            free_memory()

    def _probe(self, batch: dict[str, Tensor]) -> None:
        """Forward and backward on the bare model (no gradient all-reduce), no update."""
        with autocast(self.args.precision, self.device):
            terms = self.objective(self.model, batch)
        sum(terms.losses.values()).backward()


def _add(sums: dict[str, Tensor], key: str, value: Tensor) -> None:
    sums[key] = sums[key] + value if key in sums else value


def _count_tokens(batch: Mapping[str, Tensor]) -> Tensor:
    """Real (unpadded) tokens in a batch: its attention mask's sum, else every input id."""
    if "attention_mask" in batch:
        return batch["attention_mask"].sum().float()
    return torch.tensor(float(batch["input_ids"].numel()), device=batch["input_ids"].device)


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM ask the trainer to stop after the current step (with a checkpoint)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if trainer._stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer._stop = True
        trainer.monitor.warn("stopping after this step, with a checkpoint (interrupt again to stop at once)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
