"""The bertkit command as a user runs it: subcommands, outputs, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bertkit import BertConfig, build_model, export_google, load_model, save_bertkit

TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
            intermediate_size=24, max_position_embeddings=32)
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog",
         "##s", "a", "big", ".", ",", "run", "##ning", "hello", "world"]


def bertkit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertkit", *args], input=stdin, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(WORDS + [f"x{i}" for i in range(TINY["vocab_size"] - len(WORDS))]) + "\n")
    model = build_model(BertConfig(**TINY), "pretraining")
    return save_bertkit(model, tmp_path / "model", vocab, do_lower_case=True)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bertkit: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_subcommands():
    result = bertkit("--help")
    assert result.returncode == 0
    for command in ("info", "convert", "tokenize", "extract"):
        assert command in result.stdout


def test_info(model_dir):
    result = bertkit("info", str(model_dir), "--json")
    info = json.loads(result.stdout)
    assert info["format"] == "bertkit" and info["heads"] == ["pretraining"]
    assert info["parameters"]["encoder"] == info["parameters"]["encoder_from_config"]
    text = bertkit("info", str(model_dir)).stdout
    assert "bertkit checkpoint" in text and "layers 3, hidden 16" in text


def test_convert_through_every_format(model_dir, tmp_path):
    assert bertkit("convert", str(model_dir), str(tmp_path / "hf"), "--to", "hf").returncode == 0
    assert bertkit("convert", str(tmp_path / "hf"), str(tmp_path / "tf"), "--to", "google").returncode == 0
    assert bertkit("convert", str(tmp_path / "tf"), str(tmp_path / "back")).returncode == 0
    assert json.loads(bertkit("info", str(tmp_path / "tf"), "--json").stdout)["format"] == "google"
    a, b = load_model(model_dir, head="pretraining"), load_model(tmp_path / "back", head="pretraining")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert b.config.do_lower_case is True  # carried through tokenizer_config.json


def test_tokenize(model_dir):
    result = bertkit("tokenize", "--model", str(model_dir), stdin="The cats sat.\nHELLO, world running\n")
    assert result.stdout.splitlines() == ["the cat ##s sat .", "hello , world run ##ning"]
    ids = bertkit("tokenize", "--vocab", str(model_dir / "vocab.txt"), "--ids", stdin="the dog\n").stdout
    assert ids.split() == ["5", "10"]


def test_extract_writes_google_layout(model_dir, tmp_path):
    (tmp_path / "in.txt").write_text("the cat sat on the mat .\nhello world ||| the dogs running\n")
    out = tmp_path / "out.jsonl"
    result = bertkit("extract", "--model", str(model_dir), "--input", str(tmp_path / "in.txt"),
                     "--output", str(out), "--layers", "-1,0", "--batch-size", "1", "--max-seq-length", "32")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["linex_index"] for r in records] == [0, 1]
    second = records[1]["features"]
    assert [f["token"] for f in second] == ["[CLS]", "hello", "world", "[SEP]", "the", "dog", "##s", "run", "##ning", "[SEP]"]
    assert [layer["index"] for layer in second[0]["layers"]] == [-1, 0]
    # The values are the model's layer outputs, rounded to 6 decimals as Google writes them.
    model = load_model(model_dir)
    ids = torch.tensor([[2, 18, 19, 3, 5, 10, 11, 16, 17, 3]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        states = model(ids, types, output_hidden_states=True).hidden_states
    for t, feature in enumerate(second):
        for layer in feature["layers"]:
            expected = states[1:][layer["index"]][0, t]
            assert torch.allclose(torch.tensor(layer["values"]), expected, atol=1e-6)


def test_bad_inputs_give_one_line_and_exit_2(model_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "never.jsonl"
    assert_user_error(bertkit("extract", "--model", str(model_dir), "--input", str(empty), "--output", str(out)),
                      "empty.txt", "empty")
    assert not out.exists()
    assert_user_error(bertkit("info", str(tmp_path / "nothing")), "no such file")
    (tmp_path / "emptydir").mkdir()
    assert_user_error(bertkit("info", str(tmp_path / "emptydir")), "holds no checkpoint")
    line = tmp_path / "line.txt"
    line.write_text("the cat\n")
    assert_user_error(bertkit("extract", "--model", str(model_dir), "--input", str(line), "--output", str(out),
                              "--layers", "-9"), "--layers")
    assert not out.exists()


def google_dir(tmp_path, model_dir):
    tf = tmp_path / "tf"
    export_google(load_model(model_dir, head="pretraining"), tf, model_dir / "vocab.txt")
    return tf


def test_bad_checkpoints(model_dir, tmp_path):
    tf = google_dir(tmp_path, model_dir)
    config = json.loads((tf / "bert_config.json").read_text())

    (tf / "bert_config.json").write_text("{oops")
    assert_user_error(bertkit("info", str(tf)), "bert_config.json", "not valid JSON")
    (tf / "bert_config.json").write_text(json.dumps({**config, "hidden_act": "gelu_magic"}))
    assert_user_error(bertkit("info", str(tf)), "bert_config.json", "unknown activation")
    (tf / "bert_config.json").unlink()
    assert_user_error(bertkit("info", str(tf)), "bert_config.json", "missing")
    (tf / "bert_config.json").write_text(json.dumps(config))

    vocab = (tf / "vocab.txt").read_text()
    (tf / "vocab.txt").write_text(vocab + "extra1\nextra2\n")
    assert_user_error(bertkit("convert", str(tf), str(tmp_path / "o1")), "vocab.txt", "42 entries", "40 rows")
    (tf / "vocab.txt").write_text(vocab)

    data = next(tf.glob("bert_model.ckpt.data-*"))
    data.write_bytes(data.read_bytes()[:1000])
    assert_user_error(bertkit("convert", str(tf), str(tmp_path / "o2")), data.name)
    assert not (tmp_path / "o2" / "bertkit.json").exists()
