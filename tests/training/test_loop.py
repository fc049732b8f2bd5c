"""The training loop on tiny in-memory data: learning, accumulation, NaN steps, exact resume, signals."""

from __future__ import annotations

import itertools
import logging
import os
import signal

import pytest
import torch

from bertkit.errors import BertkitError
from bertkit.model import build_model
from bertkit.training import loop as loop_module
from bertkit.training.args import OptimizerArgs, TrainArgs
from bertkit.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    seed_everything,
)
from bertkit.training.loop import Trainer
from bertkit.training.memory import largest_fitting, micro_batch_candidates, oom_advice
from bertkit.training.monitor import read_metrics
from bertkit.training.objective import PretrainingObjective, Terms

TIMING = ("tokens_per_s", "sequences_per_s", "elapsed")
FIELDS = {"step", "loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "lr", "tokens_per_s", "grad_norm"}


@pytest.fixture
def make_trainer(tmp_path, instances, batches_factory, config_factory):
    def make(steps=8, batch=16, micro=None, dropout=0.0, objective=None, out=None, lr=3e-3, warmup=2,
             **kw) -> Trainer:
        seed_everything(0)
        model = build_model(config_factory(dropout), "pretraining")
        args = TrainArgs(output=out or tmp_path / "run", batch_size=batch, micro_batch_size=micro, max_steps=steps,
                         log_every=1, progress=False, **kw)
        optim = OptimizerArgs(learning_rate=lr, warmup_steps=warmup)
        return Trainer(model, objective or PretrainingObjective(), batches_factory(instances), args, optim)
    return make


def losses(run) -> list[float]:
    return [r["loss"] for r in read_metrics(run)]


def untimed(run) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run)]


def test_loss_falls(make_trainer, tmp_path):
    state = make_trainer(steps=40, dropout=0.1, lr=5e-3, warmup=4).fit()
    assert state.step == 40 and state.finished and state.skipped == 0
    mlm = [r["mlm_loss"] for r in read_metrics(tmp_path / "run")]
    assert sum(mlm[-5:]) / 5 < sum(mlm[:3]) / 3 - 0.4


def test_metrics_jsonl_fields(make_trainer, tmp_path):
    make_trainer(steps=3).fit()
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(FIELDS <= set(r) for r in records)
    assert records[0]["lr"] == 0.0 and records[1]["lr"] == pytest.approx(1.5e-3)  # warmup 2 of peak 3e-3
    assert all(r["loss"] == pytest.approx(r["mlm_loss"] + r["nsp_loss"]) for r in records)
    assert all(r["tokens_per_s"] > 0 and 0 <= r["mlm_accuracy"] <= 1 for r in records)


def test_accumulation_gives_the_same_updates(make_trainer, tmp_path):
    make_trainer(steps=4, batch=16, out=tmp_path / "whole").fit()
    make_trainer(steps=4, batch=16, micro=4, out=tmp_path / "micro").fit()
    torch.testing.assert_close(losses(tmp_path / "micro"), losses(tmp_path / "whole"), rtol=2e-5, atol=0)


def test_grad_checkpointing_changes_nothing_but_memory(make_trainer, tmp_path):
    plain = make_trainer(steps=3, out=tmp_path / "plain")
    plain.fit()
    ckpt = make_trainer(steps=3, grad_checkpointing=True, out=tmp_path / "ckpt")
    ckpt.fit()
    torch.testing.assert_close(losses(tmp_path / "ckpt"), losses(tmp_path / "plain"), rtol=1e-6, atol=0)
    assert ckpt.model.state_dict().keys() == plain.model.state_dict().keys()


def test_bf16_autocast_on_cpu(make_trainer, tmp_path):
    make_trainer(steps=3, precision="bf16").fit()
    assert all(torch.isfinite(torch.tensor(losses(tmp_path / "run"))))


def test_time_budget(make_trainer, tmp_path):
    """--max-time alone: the run stops at the budget and the learning rate decays with elapsed time."""
    state = make_trainer(steps=None, max_time=0.6, warmup=0).fit()
    assert state.finished and state.elapsed >= 0.6 and state.step >= 2
    records = read_metrics(tmp_path / "run")
    lrs = [r["lr"] for r in records]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] <= 3e-3 and lrs[-1] < 3e-3 * 0.5
    for before, record in itertools.pairwise(records):  # lr = peak · (1 - elapsed at the step's start / budget)
        low, high = 3e-3 * (1 - record["elapsed"] / 0.6), 3e-3 * (1 - before["elapsed"] / 0.6)
        assert low - 1e-9 <= record["lr"] <= high + 1e-9


def test_fp16_needs_a_gpu(make_trainer):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(BertkitError, match="fp16 needs a GPU"):
        make_trainer(precision="fp16")


class PoisonedObjective(PretrainingObjective):
    """Pretraining, with a NaN loss on the chosen forward calls (0-based)."""

    def __init__(self, poisoned: set[int] | None = None) -> None:
        self.poisoned, self.calls = poisoned, 0

    def __call__(self, model, batch) -> Terms:
        terms = super().__call__(model, batch)
        if self.poisoned is None or self.calls in self.poisoned:
            terms.losses["mlm"] = terms.losses["mlm"] * float("nan")
        self.calls += 1
        return terms


def test_nan_step_is_skipped_with_a_warning(make_trainer, tmp_path, caplog):
    trainer = make_trainer(steps=3, objective=PoisonedObjective({1}))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="bertkit.training"):
        state = trainer.fit()
    assert (state.step, state.skipped, state.bad_steps) == (3, 1, 0)
    assert "step 2: non-finite loss nan; update skipped (1 in a row" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_nan_every_step_stops_the_run(make_trainer):
    trainer = make_trainer(steps=10, objective=PoisonedObjective(), max_bad_steps=3)
    with pytest.raises(BertkitError, match="3 steps in a row had a non-finite loss.*after 0 updates"):
        trainer.fit()


def test_resume_is_exact(make_trainer, tmp_path, monkeypatch):
    """Crash after step 5 (checkpoints at 3 and 6), resume, finish: the same losses and weights, bit for bit."""
    whole = make_trainer(steps=8, dropout=0.1, save_every=3, out=tmp_path / "whole")
    whole.fit()

    class Crash(Exception):
        pass

    def crash_after(event, step):
        if (event, step) == ("step", 5):
            raise Crash

    monkeypatch.setattr(loop_module, "kill_hook", crash_after)
    with pytest.raises(Crash):
        make_trainer(steps=8, dropout=0.1, save_every=3, out=tmp_path / "resumed").fit()
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path / "resumed").name == "step-00000003"
    resumed = make_trainer(steps=8, dropout=0.1, save_every=3, out=tmp_path / "resumed")
    resumed.resume(latest_checkpoint(tmp_path / "resumed"))
    resumed.fit()
    assert untimed(tmp_path / "resumed") == untimed(tmp_path / "whole") and len(untimed(tmp_path / "whole")) == 8
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_sigterm_stops_after_the_step_with_a_checkpoint(make_trainer, tmp_path):
    class Terminated(PretrainingObjective):
        calls = 0

        def __call__(self, model, batch):
            Terminated.calls += 1
            if Terminated.calls == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__call__(model, batch)

    state = make_trainer(steps=10, objective=Terminated(), save_every=0).fit()
    assert state.step == 2 and not state.finished
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000002"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_tensorboard_events(make_trainer, tmp_path):
    pytest.importorskip("tensorboard")
    make_trainer(steps=1, warmup=0).fit()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_out_of_memory_probe():
    """The search and the message (the probe itself runs only on a GPU)."""
    assert micro_batch_candidates(48, below=32) == [1, 2, 3, 4, 6, 8, 12, 16, 24]
    tried = []
    best = largest_fitting(micro_batch_candidates(48, 32), lambda m: tried.append(m) or m <= 10)
    assert best == 8 and len(tried) <= 4
    message = oom_advice(micro=32, best=8, batch_size=96, world_size=2)
    assert "largest micro-batch that fits is 8: use --micro-batch-size 8 (gradient accumulation 6 keeps " \
           "the global batch of 96)" in message
    assert "not even a micro-batch of 1" in oom_advice(micro=4, best=None, batch_size=8, world_size=1)


class MemoryLimitedObjective(PretrainingObjective):
    """Pretraining that runs out of memory on micro-batches of more than ``fits`` sequences."""

    def __init__(self, fits: int) -> None:
        self.fits = fits

    def __call__(self, model, batch) -> Terms:
        if len(batch["input_ids"]) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().__call__(model, batch)


def test_out_of_memory_stops_with_the_micro_batch_that_fits(make_trainer):
    """The whole path on CPU: the step fails, the loop probes smaller micro-batches of the failed
    batch, and stops with one message naming the largest that fits and the accumulation to use."""
    trainer = make_trainer(steps=3, batch=16, objective=MemoryLimitedObjective(fits=5))
    with pytest.raises(BertkitError) as caught:
        trainer.fit()
    assert str(caught.value).startswith("out of GPU memory with --micro-batch-size 16 (global batch 16")
    assert "largest micro-batch that fits is 4: use --micro-batch-size 4 (gradient accumulation 4" in str(caught.value)
    assert trainer.state.step == 0


# --- fp16 dynamic loss scaling: the GPU path's logic, run on the CPU ---------------------------


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Let the loop run fp16 on CPU (torch's CPU autocast and GradScaler do fp16): the refusal is
    a speed rule, the scaling logic is the same code a GPU runs."""
    monkeypatch.setattr(loop_module, "check_precision", lambda precision, device: None)


def test_fp16_loss_scaling_learns_and_logs_the_scale(make_trainer, tmp_path, fp16_on_cpu):
    trainer = make_trainer(steps=6, precision="fp16")
    assert trainer.scaler is not None
    trainer.fit()
    rows = read_metrics(tmp_path / "run")
    assert all("loss_scale" in r and r["loss_scale"] > 0 for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_fp16_overflow_skips_the_update_and_halves_the_scale(make_trainer, tmp_path, fp16_on_cpu):
    trainer = make_trainer(steps=1, warmup=0, precision="fp16")
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 120)  # the scaled loss overflows
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    assert trainer.scaler.get_scale() == 2.0 ** 119
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    assert read_metrics(tmp_path / "run")[0]["loss_scale"] == 2.0 ** 119


def test_fp16_resume_restores_the_scaler(make_trainer, tmp_path, fp16_on_cpu, monkeypatch):
    """Crash after step 3 (checkpoint at 2), resume: the scale grown every step comes back too."""
    def scaled(trainer):
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1)
        return trainer

    whole = scaled(make_trainer(steps=4, precision="fp16", save_every=2, out=tmp_path / "whole"))
    whole.fit()

    def crash_after(event, step):
        if (event, step) == ("step", 3):
            raise KeyboardInterrupt

    real_kill_hook = loop_module.kill_hook
    monkeypatch.setattr(loop_module, "kill_hook", crash_after)
    with pytest.raises(KeyboardInterrupt):
        scaled(make_trainer(steps=4, precision="fp16", save_every=2, out=tmp_path / "cut")).fit()
    monkeypatch.setattr(loop_module, "kill_hook", real_kill_hook)  # fp16_on_cpu stays in force
    resumed = make_trainer(steps=4, precision="fp16", save_every=2, out=tmp_path / "cut")  # default scale 2^16
    resumed.resume(latest_checkpoint(tmp_path / "cut"))
    resumed.fit()
    assert resumed.scaler.get_scale() == whole.scaler.get_scale() == 2.0 ** 14
    assert untimed(tmp_path / "cut") == untimed(tmp_path / "whole")
