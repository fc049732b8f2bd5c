"""``bertkit finetune nq`` on tiny generated NQ files: BERT-joint training, predictions.json in the
official format, the official metrics, the nq head saved, reloaded and exported."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest
import torch
from tasks_fixtures import save_tiny_model
from torch_threads import one_thread  # noqa: F401  (autouse)

from bertkit.config import BertConfig
from bertkit.convert.checkpoint import export_google, export_hf, read_checkpoint
from bertkit.convert.load import load_model
from bertkit.convert.tf_bundle import read_tf_checkpoint
from bertkit.errors import BertkitError
from bertkit.model import BertForNaturalQuestions, build_model
from bertkit.tasks import nq
from bertkit.tasks.commands import add_evaluate_command
from bertkit.tasks.finetune import add_finetune_command
from bertkit.tasks.finetune_nq import NqTask, training_features, unknown_markers
from bertkit.tasks.finetune_squad import N_BEST_SIZE as SQUAD_N_BEST
from bertkit.tasks.finetune_squad import AnswerArgs
from bertkit.tasks.inference import run_model
from bertkit.tasks.nq import AnswerType, NqConfig
from bertkit.tasks.predict import PredictArgs, predict
from bertkit.tokenizer import load_tokenizer

FILLER = ["the", "a", "river", "town", "was", "is", "old", "near", "of", "and", "hill", "road", "by", "on"]
COLOURS = ["red", "blue", "green", "gold"]
QUESTION = "what colour is the flag"
MAX_CONTEXTS, MAX_POSITION = 8, 4
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *COLOURS, "what", "colour", "flag"]
VOCAB = WORDS + nq.marker_tokens(MAX_CONTEXTS, MAX_POSITION)  # the markers as vocab-nq.txt has them
SHAPE = ["--max-seq-length", 32, "--doc-stride", 12, "--max-query-length", 8, "--max-contexts", MAX_CONTEXTS,
         "--max-position", MAX_POSITION]


def nq_record(example_id: int, rng: random.Random, answered: bool) -> dict:
    """A document of 3-4 paragraphs of filler; when answered, one paragraph holds a colour, the short
    answer (its paragraph the long one, 3 annotators agreeing); else 3 null annotations."""
    tokens, candidates = [], []
    for _ in range(rng.randint(3, 4)):
        start = len(tokens)
        tokens += ["<P>", *(rng.choice(FILLER) for _ in range(rng.randint(3, 6))), "</P>"]
        candidates.append({"start_token": start, "end_token": len(tokens), "top_level": True})
    null = {"start_token": -1, "end_token": -1, "candidate_index": -1}
    annotation = {"long_answer": null, "short_answers": [], "yes_no_answer": "NONE"}
    if answered:
        index = rng.randrange(len(candidates))
        c = candidates[index]
        at = rng.randint(c["start_token"] + 1, c["end_token"] - 1)  # inside the paragraph, after <P>
        tokens.insert(at, rng.choice(COLOURS))
        for later in candidates[index:]:
            later["end_token"] += 1
            if later is not c:
                later["start_token"] += 1
        annotation = {"long_answer": {"start_token": c["start_token"], "end_token": c["end_token"],
                                      "candidate_index": index},
                      "short_answers": [{"start_token": at, "end_token": at + 1}], "yes_no_answer": "NONE"}
    return {"example_id": example_id, "question_text": QUESTION, "document_text": " ".join(tokens),
            "document_url": f"https://example.org/{example_id}", "long_answer_candidates": candidates,
            "annotations": [annotation] * 3}


def write_nq(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    records = [nq_record(1000 + i, rng, answered=rng.random() < 0.75) for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nq")
    return {"train": write_nq(root / "train.jsonl", 96, 1), "dev": write_nq(root / "dev.jsonl", 32, 2)}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), VOCAB)


def run_cli(*args: object) -> None:
    parser = argparse.ArgumentParser(prog="bertkit")
    sub = parser.add_subparsers(dest="command", required=True)
    add_finetune_command(sub)
    add_evaluate_command(sub)
    ns = parser.parse_args([str(a) for a in args])
    ns.func(ns)


def nq_args(model: Path, data: dict[str, Path], out: Path, *extra: object) -> list[object]:
    return ["finetune", "nq", "--train", data["train"], "--predict", data["dev"], "--model", model, "--output", out,
            *SHAPE, "--batch-size", 16, "--learning-rate", 3e-3, "--no-progress", *extra]


@pytest.fixture(scope="module")
def trained(tiny_model, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    run_cli(*nq_args(tiny_model, data, out, "--epochs", 12, "--eval-every", 40, "--include-unknowns", 0.3,
                         "--log-every", 5))
    return out


def test_learns_and_writes_official_predictions(trained, data):
    results = json.loads((trained / "eval_results.json").read_text())
    assert results["task"] == "nq" and not (trained / "best").exists()
    assert results["mean-best-threshold-f1"] == pytest.approx(
        (results["long-best-threshold-f1"] + results["short-best-threshold-f1"]) / 2)
    assert results["short-best-threshold-f1"] > 0.8 and results["long-best-threshold-f1"] > 0.8  # the colour is found
    losses = [r["loss"] for r in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert sum(losses[-3:]) / 3 < 0.3 * losses[0]
    predictions = json.loads((trained / "predictions.json").read_text())["predictions"]
    assert [p["example_id"] for p in predictions] == [r.example_id for r in nq.read_nq(data["dev"])]
    assert set(predictions[0]) == {"example_id", "long_answer", "long_answer_score", "short_answers",
                                   "short_answers_score", "yes_no_answer"}


def test_evaluate_command_scores_the_predictions_the_same(trained, data, capsys):
    results = json.loads((trained / "eval_results.json").read_text())
    capsys.readouterr()
    run_cli("evaluate", "nq", data["dev"], trained / "predictions.json")
    scores = json.loads(capsys.readouterr().out)
    assert "long-answer-f1" in scores and "short-answer-f1" in scores
    assert scores == {k: results[k] for k in scores}


def test_the_saved_model_reloads_with_the_nq_head(trained, data):
    assert read_checkpoint(trained).heads() == ["nq"]
    model = load_model(trained, "nq")
    assert isinstance(model, BertForNaturalQuestions)
    config = NqConfig(32, 12, 8, MAX_CONTEXTS, MAX_POSITION, include_unknowns=0.3)
    task = NqTask(load_tokenizer(trained), data["train"], data["dev"], config)
    metrics, _ = task.evaluate(model, run_model)
    results = json.loads((trained / "eval_results.json").read_text())
    assert metrics["mean-best-threshold-f1"] == pytest.approx(results["mean-best-threshold-f1"])
    assert load_model(trained, "qa").qa_outputs.weight.equal(model.qa_outputs.weight)  # the span head alone


def test_predict_windows_as_training_did(trained, data, tmp_path):
    assert load_model(trained, "nq").config.extra["nq"] == {
        "max_seq_length": 32, "doc_stride": 12, "max_query_length": 8, "max_contexts": MAX_CONTEXTS,
        "max_position": MAX_POSITION}
    out = tmp_path / "out" / "predictions.json"
    # an NQ model's n-best defaults to run_nq.py's 10, as training's evaluation uses (SQuAD's is 20)
    predict(PredictArgs(trained, data["dev"], out, batch_size=7, progress=False))
    ours = json.loads(out.read_text())["predictions"]
    theirs = json.loads((trained / "predictions.json").read_text())["predictions"]
    assert len(ours) == len(theirs) == 32
    for a, b in zip(ours, theirs):
        assert a.pop("long_answer_score") == pytest.approx(b.pop("long_answer_score"), abs=1e-4)
        assert a.pop("short_answers_score") == pytest.approx(b.pop("short_answers_score"), abs=1e-4)
        assert a == b
    with pytest.raises(BertkitError, match="--output FILE"):
        predict(PredictArgs(trained, data["dev"], tmp_path, progress=False))


def test_n_best_size_defaults_to_the_heads_own():
    assert AnswerArgs().n_best(nq.N_BEST_SIZE) == 10 and AnswerArgs().n_best(SQUAD_N_BEST) == 20
    assert AnswerArgs(3).n_best(nq.N_BEST_SIZE) == 3
    with pytest.raises(BertkitError, match="--n-best-size"):
        AnswerArgs(0)


def test_training_windows(tiny_model, data):
    tokenizer = load_tokenizer(tiny_model)
    config = NqConfig(32, 12, 8, MAX_CONTEXTS, MAX_POSITION)  # include_unknowns -1: answer windows only
    features = training_features(tokenizer, data["train"], config)
    n, width = features["input_ids"].shape
    assert width <= 32 and all(len(features[k]) == n for k in features)
    assert set(features["answer_types"].tolist()) == {AnswerType.SHORT}
    colours = {tokenizer.vocab[c] for c in COLOURS}
    assert all(features["input_ids"][i, features["start_positions"][i]] in colours for i in range(n))
    assert (features["start_positions"] == features["end_positions"]).all()
    kept = training_features(tokenizer, data["train"], NqConfig(32, 12, 8, MAX_CONTEXTS, MAX_POSITION, 1.0), seed=3)
    unknown = kept["answer_types"] == AnswerType.UNKNOWN
    assert unknown.any() and (kept["start_positions"][unknown] == 0).all()
    assert unknown_markers(tokenizer, config) == []
    bare = tiny_model.parent / "bare-vocab.txt"
    bare.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    assert "[ContextId=-1]" in unknown_markers(load_tokenizer(bare, lower_case=True), config)


def test_nq_head_in_google_format_and_not_in_hf(tmp_path):
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = build_model(config, "nq").eval()
    export_google(model, tmp_path / "tf")
    names = set(read_tf_checkpoint(tmp_path / "tf" / "bert_model.ckpt"))
    assert {"cls/nq/output_weights", "answer_type_output_weights", "answer_type_output_bias"} <= names
    assert read_checkpoint(tmp_path / "tf").heads() == ["nq"]
    again = load_model(tmp_path / "tf", "nq")
    ids = torch.tensor([[2, 7, 8, 3]])
    a, b = model(ids), again(ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.start_logits, b.start_logits)
    with pytest.raises(BertkitError, match="transformers has no model with bertkit's 'nq' head"):
        export_hf(model, tmp_path / "hf")


def test_bad_options(tiny_model, data, tmp_path):
    with pytest.raises(BertkitError, match="no separate test set"):
        run_cli(*nq_args(tiny_model, data, tmp_path / "a", "--do-predict"))
    with pytest.raises(BertkitError, match="--max-seq-length 128 is longer than the model's 64 positions"):
        run_cli(*nq_args(tiny_model, data, tmp_path / "a", "--max-seq-length", 128))
    unanswered = tmp_path / "none.jsonl"
    rng = random.Random(0)
    unanswered.write_text("".join(json.dumps(nq_record(i, rng, False)) + "\n" for i in range(3)), encoding="utf-8")
    with pytest.raises(BertkitError, match="no training windows"):
        run_cli(*nq_args(tiny_model, {"train": unanswered, "dev": data["dev"]}, tmp_path / "b",
                         "--include-unknowns", -1))
