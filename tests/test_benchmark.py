"""bertkit benchmark: the FLOP count, the workloads, the identical-weights check, and the command."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bertkit import BertConfig, BertkitError, build_model, save_bertkit
from bertkit.benchmark import (
    TOLERANCE,
    BenchSpec,
    _bertkit_loss,
    _check_lengths,
    _transformers_loss,
    check_agreement,
    encoder_flops,
    make_batch,
    make_step,
    prepare,
    require_transformers,
    transformers_twin,
)
from bertkit.data.create import CreateConfig, create_pretraining_data
from bertkit.data.dataset import PretrainingDataset

TINY = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=256, max_position_embeddings=128)
RATE_FIELDS = ("tokens_per_s", "ms_per_batch", "flops_per_s", "mfu")


def bertkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertkit", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_bertkit(build_model(TINY, "pretraining"), tmp_path_factory.mktemp("bench") / "tiny")


# --- FLOPs ------------------------------------------------------------------------------------


def test_encoder_flops_against_a_hand_count():
    # Per token per layer: 2·(4·64² + 2·64·256) = 98,304 for the weight products; attention 4·n·64.
    n10 = 10 * (98_304 + 4 * 10 * 64)  # 1,008,640 per layer
    n20 = 20 * (98_304 + 4 * 20 * 64)  # 2,068,480 per layer
    assert encoder_flops(TINY, [10, 20]) == 2 * (n10 + n20) == 6_154_240
    assert encoder_flops(TINY, [10, 20], training=True) == 3 * 6_154_240
    assert encoder_flops(TINY, []) == 0


def test_encoder_flops_weight_products_match_torch_flop_counter():
    """torch's counter sees the linear layers (on CPU it does not count fused SDPA): the formula
    without its attention term, plus the pooler's one H×H product, is what it counts."""
    model = build_model(TINY).eval()
    n = 17
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randint(0, TINY.vocab_size, (1, n)))
    attention = TINY.num_hidden_layers * n * 4 * n * TINY.hidden_size
    pooler = 2 * TINY.hidden_size ** 2
    assert counter.get_total_flops() == encoder_flops(TINY, [n]) - attention + pooler


# --- workloads --------------------------------------------------------------------------------


@pytest.mark.parametrize(("workload", "shortest", "longest", "slots"), [("var", 20, 128, 20), ("short", 5, 32, 5)])
def test_variable_length_pretraining_batch(workload, shortest, longest, slots):
    spec = BenchSpec(mode="train", lengths=workload, batch_size=16)
    batch = make_batch(spec, TINY.vocab_size, index=3)
    lengths = batch["attention_mask"].sum(1)
    assert shortest <= lengths.min() and lengths.max() <= longest
    assert batch["input_ids"].shape[1] == lengths.max()  # padded to the batch's longest
    assert torch.equal(make_batch(spec, TINY.vocab_size, index=3)["input_ids"], batch["input_ids"])
    assert batch["masked_lm_positions"].shape[1] == slots  # ceil(15% of the longest)
    for row, n in enumerate(lengths.tolist()):
        real = batch["masked_lm_weights"][row] > 0
        positions = batch["masked_lm_positions"][row][real]
        assert int(real.sum()) == max(1, round(0.15 * n))
        assert positions.min() >= 1 and positions.max() <= n - 2  # not [CLS], not the last [SEP]
        labels = batch["mlm_labels"][row]
        assert torch.equal((labels != -100).nonzero().flatten(), positions)
        assert torch.equal(labels[positions], batch["input_ids"][row][positions])
        assert torch.equal(batch["masked_lm_ids"][row][real], labels[positions])


WORDS = ["the", "a", "cat", "dog", "bird", "sees", "chases", "near", "old", "red", "quiet", "house", "tree"]


@pytest.fixture(scope="module")
def pretraining_data(tmp_path_factory):
    """`bertkit data create` output (length 48) from documents of 1-8 sentences: pairs of many lengths."""
    root = tmp_path_factory.mktemp("pretraining")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    rng = random.Random(0)
    docs = ["\n".join(" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + " ." for _ in range(rng.randint(1, 8)))
            for _ in range(60)]
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    config = CreateConfig(max_seq_length=48, max_predictions_per_seq=7, dupe_factor=2, seed=1)
    create_pretraining_data(str(root / "corpus.txt"), root / "vocab.txt", root / "data", config, lower_case=True)
    return root / "data"


def test_data_batches_are_the_instances_in_shuffled_order(pretraining_data):
    """--lengths data: batch i is positions [iB, (i+1)B) of the data's order for the seed, cut to its
    longest instance; transformers' labels put each masked slot's id at its position."""
    dataset = PretrainingDataset(pretraining_data)
    spec = BenchSpec(mode="train", lengths="data", data=str(pretraining_data), batch_size=8, seed=2)
    batch = make_batch(spec, TINY.vocab_size, index=1)
    expected = dataset.get_batch(dataset.permutation(2)(np.arange(8, 16)))
    lengths = expected["attention_mask"].sum(1)
    assert lengths.min() < lengths.max() == batch["input_ids"].shape[1] <= 48  # mixed lengths, cut to the longest
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert np.array_equal(batch[name].numpy(), expected[name][:, :lengths.max()]), name
    for name in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights", "next_sentence_labels"):
        assert np.array_equal(batch[name].numpy(), expected[name]), name
    real = expected["masked_lm_weights"] > 0
    labels = batch["mlm_labels"].numpy()
    for row in range(8):
        positions = expected["masked_lm_positions"][row][real[row]]
        assert np.array_equal(np.flatnonzero(labels[row] != -100), np.sort(positions))
        assert np.array_equal(labels[row][positions], expected["masked_lm_ids"][row][real[row]])
    inputs = make_batch(dataclasses.replace(spec, mode="infer"), TINY.vocab_size, index=1)
    assert sorted(inputs) == ["attention_mask", "input_ids", "token_type_ids"]
    assert torch.equal(inputs["input_ids"], batch["input_ids"])
    wrapped = make_batch(spec, TINY.vocab_size, index=len(dataset))  # batch N starts at N*B mod N = 0
    assert torch.equal(wrapped["input_ids"], make_batch(spec, TINY.vocab_size, index=0)["input_ids"])


def test_data_batches_give_both_sides_the_same_loss(pretraining_data, tmp_path):
    """On the same weights, bertkit's objective (masked slots, weighted) and transformers' (labels
    -100 elsewhere) are the same number on a real pretraining batch."""
    spec = BenchSpec(mode="train", lengths="data", data=str(pretraining_data), batch_size=8)
    torch.manual_seed(0)
    ours = build_model(TINY, "pretraining").eval()
    theirs = transformers_twin(ours, tmp_path / "twin").eval()
    batch = make_batch(spec, TINY.vocab_size, index=0)
    assert check_agreement(ours, theirs, batch, spec) <= TOLERANCE["fp32"]
    with torch.no_grad():
        torch.testing.assert_close(_bertkit_loss(ours, batch), _transformers_loss(theirs, batch), rtol=1e-5, atol=1e-6)


def test_data_that_does_not_fit_the_model_is_refused(pretraining_data):
    spec = BenchSpec(mode="train", lengths="data", data=str(pretraining_data))
    with pytest.raises(BertkitError, match="token id .* outside the model's vocabulary of 5"):
        _check_lengths(dataclasses.replace(TINY, vocab_size=5), [spec])
    with pytest.raises(BertkitError, match="at most 32 positions; the workload needs 48"):
        _check_lengths(dataclasses.replace(TINY, max_position_embeddings=32), [spec])
    _check_lengths(TINY, [spec])


# --- the identical-weights check --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_agreement_check_passes_on_same_weights_and_fails_loudly_otherwise(mode, tmp_path):
    spec = BenchSpec(mode=mode, lengths="var", batch_size=4)
    torch.manual_seed(0)
    ours = build_model(TINY, spec.head).eval()
    same = transformers_twin(ours, tmp_path / "same")
    torch.manual_seed(1)
    other = transformers_twin(build_model(TINY, spec.head).eval(), tmp_path / "other")
    batch = make_batch(spec, TINY.vocab_size, index=0)
    assert check_agreement(ours, same, batch, spec) <= TOLERANCE["fp32"]
    with pytest.raises(BertkitError, match="disagree on real tokens"):
        check_agreement(ours, other, batch, spec)


def test_missing_transformers_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(BertkitError, match="needs the transformers package"):
        require_transformers()


# --- the command ------------------------------------------------------------------------------


def check_rates(row: dict, memory: bool) -> None:
    for field in RATE_FIELDS:
        assert row[field] > 0, field
    if memory:
        assert row["peak_memory_mb"] > 0 and row["step_memory_mb"] is not None, row


@pytest.mark.parametrize("mode, against", [("infer", None), ("train", "transformers")])
def test_benchmark_json(tiny_dir, mode, against):
    args = ["benchmark", "--model", str(tiny_dir), "--mode", mode, "--lengths", "var", "--repeats", "1",
            "--batch-size", "4", "--threads", "1", "--json"]
    result = bertkit(*args, *(["--against", against] if against else []))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config"] == {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 256, "vocab": 100}
    assert report["device"] == "cpu" and report["threads"] == 1
    assert report["matmul_peak_flops_per_s"]["fp32"] > 0
    (run,) = report["results"]
    spec = (run["mode"], run["lengths"], run["precision"], run["batch_size"], run["repeats"])
    assert spec == (mode, "var", "fp32", 4, 1)
    assert 20 <= run["real_tokens_per_batch"] <= 4 * 128 and 0 <= run["padding"] < 1
    expected = ["bertkit", "transformers"] if against else ["bertkit"]
    assert list(run["implementations"]) == expected
    for row in run["implementations"].values():
        check_rates(row, memory=True)
    if against:
        assert run["speedup"] > 0 and 0 <= run["max_relative_difference"] <= TOLERANCE["fp32"]
        assert report["versions"]["transformers"]
    else:
        assert run["speedup"] is None and run["max_relative_difference"] is None


def test_benchmark_on_pretraining_data(tiny_dir, pretraining_data):
    result = bertkit("benchmark", "--model", str(tiny_dir), "--mode", "train", "--lengths", "data", "--data",
                     str(pretraining_data), "--against", "transformers", "--repeats", "2", "--batch-size", "4",
                     "--threads", "1", "--json")
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)["results"]
    assert (run["lengths"], run["data"]) == ("data", str(pretraining_data))
    assert 0 < run["real_tokens_per_batch"] <= 4 * 48 and 0 <= run["padding"] < 1
    assert 0 <= run["max_relative_difference"] <= TOLERANCE["fp32"] and run["speedup"] > 0
    for row in run["implementations"].values():
        check_rates(row, memory=True)  # the memory children read the same data


def test_benchmark_table_against_transformers():
    result = bertkit("benchmark", "--model", "tiny", "--against", "transformers", "--precision", "bf16",
                     "--repeats", "1", "--batch-size", "2", "--threads", "1", "--no-memory")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("mode") and "speed-up" in line for line in lines)
    assert any("bertkit" in line and line.startswith("infer") for line in lines)
    assert any(line.split()[:1] == ["transformers"] for line in lines)
    assert "outputs agreed on real tokens" in result.stdout


def test_benchmark_compiled_against_transformers(tiny_dir):
    """--compile times bertkit's compiled encoder, after checking it against transformers."""
    result = bertkit("benchmark", "--model", str(tiny_dir), "--compile", "--lengths", "var", "--against",
                     "transformers", "--repeats", "2", "--batch-size", "4", "--threads", "1", "--no-memory", "--json")
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)["results"]
    assert run["compile"] is True and 0 <= run["max_relative_difference"] <= TOLERANCE["fp32"]
    assert run["speedup"] > 0


@pytest.mark.parametrize("workload", ["var", "data"])
def test_compiled_training_steps_as_eager_without_recompiling(workload, request):
    """--mode train --compile times the whole model under torch.compile (pretrain --compile): its
    steps leave the weights eager steps leave, and batches of new lengths reuse one compilation,
    random (var) or read from pretraining data."""
    config = dataclasses.replace(TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = build_model(config, "pretraining").eval()
    data = str(request.getfixturevalue("pretraining_data")) if workload == "data" else None
    spec = BenchSpec(mode="train", lengths=workload, data=data, batch_size=4, compile=True)
    cpu = torch.device("cpu")
    eager = prepare("bertkit", model, dataclasses.replace(spec, compile=False), cpu)
    compiled = prepare("bertkit", model, spec, cpu)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    batches = [make_batch(spec, config.vocab_size, i) for i in range(3)]
    assert len({int(b["attention_mask"].sum()) for b in batches}) == 3  # three packed sizes
    if workload == "var":
        assert len({b["input_ids"].shape[1] for b in batches}) == 3  # and three widths
    steps = [make_step("bertkit", m, spec, cpu) for m in (eager, compiled)]
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in batches:
            for step in steps:
                step(batch)
    for (name, ours), theirs in zip(eager.named_parameters(), compiled._orig_mod.parameters()):
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(eager.bert.encoder.layer[0].attention.self.query.weight,
                           model.bert.encoder.layer[0].attention.self.query.weight)  # it trained


@pytest.mark.parametrize("args, fragment", [
    (["--model", "/no/such/model"], "/no/such/model: no such checkpoint directory"),
    (["--model", "tiny", "--repeats", "0"], "--repeats must be at least 1"),
    (["--model", "tiny", "--mode", "train", "--precision", "bf16-weights"], "bf16-weights is for inference"),
    (["--model", "tiny", "--device", "tpu"], "unknown device"),
    (["--model", "tiny", "--lengths", "data"], "--lengths data reads its batches from --data PATH"),
    (["--model", "tiny", "--data", "/no/such/data"], "--data needs --lengths data"),
    (["--model", "tiny", "--lengths", "data", "--data", "/no/such/data"], "--data /no/such/data: no such pretraining data"),
])
def test_bad_input_is_a_one_line_error(args, fragment):
    result = bertkit("benchmark", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bertkit: error: ") and fragment in lines[0], result.stderr
