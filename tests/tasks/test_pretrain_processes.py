"""`bertkit pretrain` in other processes: SIGKILL (mid-run and inside a checkpoint write) then resume, and
2-process DDP (gloo) against one process."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from bertkit.training.checkpoint import CHECKPOINTS, TEST_KILL_ENV, list_checkpoints
from bertkit.training.monitor import read_metrics

TIMING = ("tokens_per_s", "sequences_per_s", "elapsed")


def args(data, config, out, *extra):
    return ("--data", data, "--model-config", config, "--output", out, "--batch-size", 16, "--micro-batch-size", 8,
            "--learning-rate", 5e-3, "--max-steps", 8, "--log-every", 1, "--save-every", 3, "--no-progress", *extra)


def untimed(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run)]


def assert_same_model(a, b) -> None:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_sigkill_then_resume_is_exact(run_pretrain_process, pretraining_data, model_config, tmp_path):
    """Killed while writing checkpoint 6, resumed and killed after step 5, resumed to the end: every loss and
    weight equals the uninterrupted run's, bit for bit, and checkpoint 3 survived both kills."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    done = run_pretrain_process(*args(pretraining_data, model_config, whole))
    assert done.returncode == 0, done.stderr

    killed = run_pretrain_process(*args(pretraining_data, model_config, broken), **{TEST_KILL_ENV: "checkpoint:6"})
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in list_checkpoints(broken)] == ["step-00000003"]
    assert (broken / CHECKPOINTS / ".tmp-step-00000006" / "trainer.pt").is_file()  # the write was under way

    killed = run_pretrain_process(*args(pretraining_data, model_config, broken, "--resume"),
                                  **{TEST_KILL_ENV: "step:5"})
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in list_checkpoints(broken)] == ["step-00000003"]
    assert not (broken / CHECKPOINTS / ".tmp-step-00000006").exists()

    resumed = run_pretrain_process(*args(pretraining_data, model_config, broken, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert untimed(broken) == untimed(whole) and len(untimed(whole)) == 8
    assert_same_model(broken, whole)


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_equal_one(cli, run_pretrain_process, pretraining_data, config_writer, tmp_path, sharding):
    """The same global batch and seed: 2 gloo processes (micro-batch 4, accumulation 2) give one process's
    losses (micro-batch 8, accumulation 2). Dropout 0: dropout masks are drawn per process."""
    config = config_writer(tmp_path / "config.json", dropout=0.0)
    one, two = tmp_path / "one", tmp_path / "two"
    cli(*("pretrain", *args(pretraining_data, config, one)))
    ran = run_pretrain_process(*args(pretraining_data, config, two, "--micro-batch-size", 4, "--sharding", sharding),
                               nproc=2, OMP_NUM_THREADS="1")
    assert ran.returncode == 0, ran.stderr
    a, b = untimed(one), untimed(two)
    assert [r["step"] for r in b] == list(range(1, 9))
    # float sums in another order: the losses agree closely; an accuracy may flip one near-tied prediction
    for key, atol in (("loss", 0), ("mlm_loss", 0), ("nsp_loss", 0), ("grad_norm", 0), ("mlm_accuracy", 0.03),
                      ("nsp_accuracy", 0.07)):
        torch.testing.assert_close([r[key] for r in b], [r[key] for r in a], rtol=1e-4, atol=atol, msg=key)
    assert [p.name for p in list_checkpoints(two)] == ["step-00000003", "step-00000006", "step-00000008"]
    assert sorted(p.name for p in (two / CHECKPOINTS / "step-00000008").iterdir()) == \
        ["meta.json", "rank-00000.pt", "rank-00001.pt", "trainer.pt"]
