"""``bertkit finetune classify`` and the fine-tuning framework under it (seeds, best model, resume)."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tasks_fixtures import run_command, save_tiny_model
from torch_threads import one_thread  # noqa: F401  (autouse)

from bertkit.convert.load import load_model
from bertkit.errors import BertkitError
from bertkit.tasks.finetune import add_finetune_command
from bertkit.training.checkpoint import TEST_KILL_ENV

WORDS = ["good", "bad", "fine", "awful", "the", "a", "film", "book", "was", "is", "very", "quite", "plot", "cast"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]
POSITIVE, NEGATIVE = ("good", "fine"), ("bad", "awful")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-layer encoder saved in bertkit's format, with its vocabulary."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), VOCAB)


def sentiment_rows(n: int, seed: int, regression: bool = False) -> list[dict[str, str]]:
    """Sentences whose label is decided by one word (pos/neg), padded with filler of varied length."""
    rng = random.Random(seed)
    filler = ["the", "a", "film", "book", "was", "is", "very", "quite", "plot", "cast"]
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = [rng.choice(filler) for _ in range(rng.randint(1, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if positive else NEGATIVE))
        label = f"{4.0 if positive else 1.0:.3f}" if regression else ("pos" if positive else "neg")
        rows.append({"text": " ".join(words) + " .", "label": label})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], label: bool = True) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        fields = ["text", "label"] if label else ["text"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sentiment")
    return {"train": write_csv(root / "train.csv", sentiment_rows(192, 1)),
            "dev": write_csv(root / "dev.csv", sentiment_rows(64, 2)),
            "test": write_csv(root / "test.csv", sentiment_rows(24, 3), label=False)}


def run_cli(*args: object) -> None:
    run_command(add_finetune_command, *args)


def custom_args(model: Path, data: dict[str, Path], out: Path, *extra: object) -> list[object]:
    return ["finetune", "classify", "--task", "custom", "--train", data["train"], "--dev", data["dev"],
            "--model", model, "--output", out, "--batch-size", 16, "--learning-rate", 3e-3, "--no-progress",
            *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_learns_and_keeps_the_best_model(tiny_model, sentiment, tmp_path):
    out = tmp_path / "run"
    run_cli(*custom_args(tiny_model, sentiment, out, "--epochs", 4, "--eval-every", 6, "--test", sentiment["test"],
                         "--do-predict"))
    results = json.loads((out / "eval_results.json").read_text())
    assert results["accuracy"] > 0.9  # chance is 0.5: the one deciding word is learnt
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if "eval_score" in r]
    assert [r["step"] for r in evals] == [6, 12, 18, 24, 30, 36, 42, 48]
    best = max(evals, key=lambda r: r["eval_score"])  # the first of equal scores is kept
    assert results["step"] == best["step"] and results["accuracy"] == pytest.approx(best["eval_accuracy"])
    assert not (out / "best").exists()
    model = load_model(out, "classification")
    assert model.config.label_names == ["neg", "pos"]
    probabilities = np.loadtxt(out / "test_results.tsv", delimiter="\t")
    assert probabilities.shape == (24, 2) and np.allclose(probabilities.sum(1), 1.0)
    assert len((out / "dev_results.tsv").read_text().splitlines()) == 64


def test_the_saved_model_scores_what_eval_results_say(tiny_model, sentiment, tmp_path):
    from bertkit.tasks.finetune_classify import ClassifyTask, read_classify_data
    from bertkit.tasks.inference import run_model
    from bertkit.tokenizer import load_tokenizer

    out = tmp_path / "run"
    run_cli(*custom_args(tiny_model, sentiment, out, "--max-steps", 10, "--eval-every", 5))
    data = read_classify_data("custom", train=sentiment["train"], dev=sentiment["dev"])
    task = ClassifyTask(data, load_tokenizer(out), 128)
    metrics, _ = task.evaluate(load_model(out, "classification"), run_model)
    results = json.loads((out / "eval_results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(results["accuracy"])
    assert metrics["loss"] == pytest.approx(results["loss"], rel=1e-5)


def test_seeds_are_summarised(tiny_model, sentiment, tmp_path):
    out = tmp_path / "seeds"
    run_cli(*custom_args(tiny_model, sentiment, out, "--max-steps", 4, "--seeds", "1,2"))
    summary = json.loads((out / "eval_results.json").read_text())
    assert summary["seeds"] == [1, 2] and summary["main_metric"] == "score"
    accuracies = [json.loads((out / f"seed-{s}" / "eval_results.json").read_text())["accuracy"] for s in (1, 2)]
    stats = summary["summary"]["accuracy"]
    assert stats["values"] == accuracies
    assert stats["mean"] == pytest.approx(np.mean(accuracies)) and stats["std"] == pytest.approx(np.std(accuracies, ddof=1))
    # different seeds: different heads and data orders, so different runs
    first, second = (load_model(out / f"seed-{s}", "classification") for s in (1, 2))
    assert not torch.equal(first.classifier.weight, second.classifier.weight)
    # repeating with --resume trains nothing again
    before = (out / "seed-1" / "model.safetensors").stat().st_mtime_ns
    run_cli(*custom_args(tiny_model, sentiment, out, "--max-steps", 4, "--seeds", "1,2", "--resume"))
    assert (out / "seed-1" / "model.safetensors").stat().st_mtime_ns == before


def test_regression_from_numeric_labels(tiny_model, tmp_path):
    data = {"train": write_csv(tmp_path / "train.csv", sentiment_rows(96, 1, regression=True)),
            "dev": write_csv(tmp_path / "dev.csv", sentiment_rows(32, 2, regression=True))}
    out = tmp_path / "run"
    # 60 steps left Pearson anywhere from 0.36 to 0.74 by the seed's head draw; 120 give 0.99
    run_cli(*custom_args(tiny_model, data, out, "--max-steps", 120, "--eval-every", 40))
    results = json.loads((out / "eval_results.json").read_text())
    assert {"pearson", "spearman", "score", "loss"} <= set(results)
    assert results["pearson"] > 0.9
    assert load_model(out, "classification").config.num_labels == 1


def test_glue_task_writes_the_submission_file(tiny_model, tmp_path):
    """RTE's layout: index, sentence1, sentence2, label; the test file has no label column."""
    glue = tmp_path / "RTE"
    glue.mkdir()
    rng = random.Random(0)

    def rows(n: int, labelled: bool) -> str:
        lines = ["index\tsentence1\tsentence2" + ("\tlabel" if labelled else "")]
        for i in range(n):
            a, b = rng.choice(WORDS), rng.choice(WORDS)
            lines.append(f"{i}\tthe {a} .\tthe {b} ." + (f"\t{'entailment' if a == b else 'not_entailment'}"
                                                          if labelled else ""))
        return "\n".join(lines) + "\n"

    (glue / "train.tsv").write_text(rows(40, True), encoding="utf-8")
    (glue / "dev.tsv").write_text(rows(16, True), encoding="utf-8")
    (glue / "test.tsv").write_text(rows(12, False), encoding="utf-8")
    out = tmp_path / "run"
    run_cli("finetune", "classify", "--task", "rte", "--data-dir", glue, "--model", tiny_model, "--output", out,
            "--max-steps", 2, "--batch-size", 8, "--do-predict", "--no-progress")
    submission = (out / "RTE.tsv").read_text().splitlines()
    assert submission[0] == "index\tprediction" and len(submission) == 13
    assert {line.split("\t")[1] for line in submission[1:]} <= {"entailment", "not_entailment"}
    assert json.loads((out / "eval_results.json").read_text())["task"] == "rte"


def test_a_head_for_other_labels_is_refused(tiny_model, sentiment, tmp_path):
    out = tmp_path / "run"
    run_cli(*custom_args(tiny_model, sentiment, out, "--max-steps", 1))
    renamed = {}
    for split in ("train", "dev"):
        rows = list(csv.DictReader(sentiment[split].read_text(encoding="utf-8").splitlines()))
        renamed[split] = write_csv(tmp_path / f"{split}.csv",
                                   [{**r, "label": {"pos": "yes", "neg": "no"}[r["label"]]} for r in rows])
    with pytest.raises(BertkitError, match=r"head predicts \['neg', 'pos'\]"):
        run_cli(*custom_args(out, renamed, tmp_path / "again", "--max-steps", 1))


def test_unseen_dev_label_and_missing_files(tiny_model, sentiment, tmp_path):
    rows = sentiment_rows(8, 5)
    rows[3]["label"] = "meh"
    data = {"train": sentiment["train"], "dev": write_csv(tmp_path / "dev.csv", rows)}
    with pytest.raises(BertkitError, match=r"dev.csv:5: dev label 'meh' is not one of the training labels"):
        run_cli(*custom_args(tiny_model, data, tmp_path / "run", "--max-steps", 1))
    with pytest.raises(BertkitError, match="needs --train FILE and --dev FILE"):
        run_cli("finetune", "classify", "--task", "custom", "--model", tiny_model, "--output", tmp_path / "x")
    with pytest.raises(BertkitError, match="needs --data-dir"):
        run_cli("finetune", "classify", "--task", "mrpc", "--model", tiny_model, "--output", tmp_path / "x")


def test_a_finished_run_is_not_overwritten(tiny_model, sentiment, tmp_path):
    out = tmp_path / "run"
    run_cli(*custom_args(tiny_model, sentiment, out, "--max-steps", 2, "--save-every", 0))
    with pytest.raises(BertkitError, match="already holds"):
        run_cli(*custom_args(tiny_model, sentiment, out, "--max-steps", 2))


def test_killed_run_resumes_to_the_same_result(tiny_model, sentiment, tmp_path):
    """SIGKILL after step 6 (checkpoints every 3 steps, evaluations every 4), then --resume: the
    final model and dev metrics equal an uninterrupted run's."""
    def command(out: Path, *extra: str) -> list[str]:
        args = custom_args(tiny_model, sentiment, out, "--max-steps", 10, "--eval-every", 4, "--save-every", 3,
                           "--keep-checkpoints", 2, *extra)
        return [sys.executable, "-m", "bertkit", *map(str, args)]

    env = {"OMP_NUM_THREADS": str(torch.get_num_threads()), "PATH": "/usr/bin:/bin"}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert subprocess.run(command(whole), env=env, capture_output=True, check=False).returncode == 0
    killed = subprocess.run(command(cut), env={**env, TEST_KILL_ENV: "step:6"}, capture_output=True, check=False)
    assert killed.returncode == -9 and (cut / "best").is_dir() and not (cut / "eval_results.json").exists()
    resumed = subprocess.run(command(cut, "--resume"), env=env, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (json.loads((d / "eval_results.json").read_text()) for d in (whole, cut))
    assert a == b
    wa, wb = (load_model(d, "classification").state_dict() for d in (whole, cut))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
