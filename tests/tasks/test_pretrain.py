"""`bertkit pretrain` in this process: a run end to end, --init from HF and Google checkpoints, bad input."""

from __future__ import annotations

import pytest
import torch

from bertkit import cli as bertkit_cli
from bertkit.convert.checkpoint import export_google, read_checkpoint
from bertkit.convert.load import load_model
from bertkit.errors import BertkitError
from bertkit.tasks.pretrain import PretrainArgs, steps_for_epochs
from bertkit.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from bertkit.training.monitor import read_metrics

FIELDS = {"step", "loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "lr", "tokens_per_s", "grad_norm"}
COMMON = ("--batch-size", 16, "--micro-batch-size", 8, "--learning-rate", 5e-3, "--no-progress")


def test_end_to_end(cli, pretraining_data, model_config, tmp_path, capsys, vocab):
    out = tmp_path / "run"
    cli("pretrain", "--data", pretraining_data, "--model-config", model_config, "--output", out, *COMMON,
        "--max-steps", 30, "--log-every", 1, "--save-every", 10, "--keep-checkpoints", 2)
    assert "trained 30 steps" in capsys.readouterr().out
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 31)) and all(FIELDS <= set(r) for r in records)
    assert sum(r["loss"] for r in records[-5:]) / 5 < sum(r["loss"] for r in records[:3]) / 3 - 0.3
    assert [p.name for p in list_checkpoints(out)] == ["step-00000020", "step-00000030"]
    # the final model: bertkit's format, loadable by every command, equal to the last checkpoint
    assert read_checkpoint(out).format == "bertkit" and (out / "vocab.txt").read_text().split() == vocab
    model = load_model(out, "pretraining")
    trained = load_checkpoint(latest_checkpoint(out), 0, 1)[0]["model"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    assert bertkit_cli.main(["info", str(out)]) == 0


def test_plot_command(cli, pretraining_data, model_config, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    cli("pretrain", "--data", pretraining_data, "--model-config", model_config, "--output", out, *COMMON,
        "--max-steps", 4, "--log-every", 1)
    cli("plot", out)
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_compile(cli, pretraining_data, model_config, tmp_path):
    out = tmp_path / "run"
    cli("pretrain", "--data", pretraining_data, "--model-config", model_config, "--output", out, *COMMON,
        "--max-steps", 3, "--log-every", 1, "--compile")
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]


def test_epochs_count_steps(pretraining_data):
    from bertkit.data.dataset import PretrainingDataset

    n = len(PretrainingDataset(pretraining_data))
    assert steps_for_epochs(pretraining_data, 2, 16) == 2 * n // 16


def test_ids_outside_the_vocabulary_fail_before_the_first_step(cli, pretraining_data, tmp_path, config_writer):
    small = config_writer(tmp_path / "small.json", vocab_size=10)
    with pytest.raises(BertkitError, match="token id .* outside the model's vocabulary of 10"):
        cli("pretrain", "--data", pretraining_data, "--model-config", small, "--output", tmp_path / "run",
            *COMMON, "--max-steps", 3)
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not list_checkpoints(tmp_path / "run")


def test_sequence_length_is_checked(cli, pretraining_data, model_config, tmp_path, config_writer):
    with pytest.raises(BertkitError, match="--max-seq-length 512, but the data's sequences are 32 long"):
        cli("pretrain", "--data", pretraining_data, "--model-config", model_config, "--output", tmp_path / "run",
            "--max-seq-length", 512, *COMMON, "--max-steps", 3)
    short = config_writer(tmp_path / "short.json", max_position_embeddings=16)
    with pytest.raises(BertkitError, match="only 16 positions"):
        cli("pretrain", "--data", pretraining_data, "--model-config", short, "--output", tmp_path / "run",
            *COMMON, "--max-steps", 3)


def test_runs_are_not_mixed_up(cli, pretraining_data, model_config, tmp_path):
    args = ("--data", pretraining_data, "--model-config", model_config, "--output", tmp_path / "run", *COMMON)
    with pytest.raises(BertkitError, match="nothing to resume"):
        cli("pretrain", *args, "--max-steps", 3, "--resume")
    cli("pretrain", *args, "--max-steps", 3)
    with pytest.raises(BertkitError, match="already holds a run"):
        cli("pretrain", *args, "--max-steps", 3)
    cli("pretrain", *args, "--max-steps", 5, "--resume")  # a finished run can be extended
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [3, 5]


def test_model_source_is_required_and_unique(pretraining_data):
    with pytest.raises(BertkitError, match="say which model"):
        PretrainArgs(data=pretraining_data)
    with pytest.raises(BertkitError, match="not both"):
        PretrainArgs(data=pretraining_data, model_config="base", init=pretraining_data)


def _assert_started_from(out, reference: dict[str, torch.Tensor]) -> None:
    """The trained model is the reference's weights, moved only by the tiny learning rate."""
    trained = load_model(out, "pretraining").state_dict()
    for name, tensor in reference.items():
        torch.testing.assert_close(trained[name], tensor, atol=1e-6, rtol=0, msg=name)


def _init_and_train(cli, pretraining_data, init, out) -> None:
    cli("pretrain", "--data", pretraining_data, "--init", init, "--output", out, "--batch-size", 8,
        "--learning-rate", 1e-9, "--max-steps", 2, "--no-progress")


def test_init_from_hf(cli, pretraining_data, tmp_path, vocab):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(1)
    hf = transformers.BertForPreTraining(config)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    _init_and_train(cli, pretraining_data, tmp_path / "hf", tmp_path / "run")
    reference = load_model(tmp_path / "hf", "pretraining").state_dict()
    _assert_started_from(tmp_path / "run", reference)
    assert reference["bert.embeddings.word_embeddings.weight"].equal(hf.bert.embeddings.word_embeddings.weight.detach())


def test_init_from_google(cli, pretraining_data, tmp_path, config_writer):
    from bertkit.config import BertConfig
    from bertkit.model import build_model

    torch.manual_seed(2)
    model = build_model(BertConfig.from_json_file(config_writer(tmp_path / "c.json")), "pretraining")
    export_google(model, tmp_path / "google", pretraining_data / "vocab.txt")
    assert read_checkpoint(tmp_path / "google").format == "google"
    _init_and_train(cli, pretraining_data, tmp_path / "google", tmp_path / "run")
    _assert_started_from(tmp_path / "run", model.state_dict())
