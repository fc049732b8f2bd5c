"""``bertkit predict``: every head's input and output formats, predictions equal to the model's own
outputs one example at a time (so batching by length keeps the input's order), and bad input."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from tasks_fixtures import save_tiny_model, write
from torch_threads import one_thread  # noqa: F401  (autouse)

from bertkit import cli as bertkit_cli
from bertkit.errors import BertkitError
from bertkit.tasks import ner
from bertkit.tasks.predict import PredictArgs, looks_like_conll, predict
from bertkit.tokenizer import load_tokenizer

WORDS = ["the", "a", "film", "book", "was", "is", "very", "good", "bad", "plot", "anna", "paris", "visited", "met",
         "who", "wrote", "it", "in", "where", "did", "go", "smith", "##ville", "."]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    # random weights, large enough that examples get clearly different outputs
    tiny = partial(save_tiny_model, vocab=VOCAB, max_position_embeddings=128, initializer_range=0.5)
    return {"classification": tiny(root / "cls", head="classification", label_names=["bad", "good", "meh"]),
            "regression": tiny(root / "reg", head="classification", num_labels=1),
            "token_classification": tiny(root / "ner", head="token_classification", label_names=TAGS),
            "qa": tiny(root / "qa", head="qa"), "encoder": tiny(root / "enc")}


def alone(model_dir: Path, head: str, text_a, text_b=None, split: bool = False) -> torch.Tensor:
    """The model's output for one example, unbatched: logits (C,) / (T, C), or (start, end) for qa."""
    from bertkit.convert.load import load_model

    model, tokenizer = load_model(model_dir, head), load_tokenizer(model_dir)
    with torch.no_grad():
        out = model(**tokenizer.pad([tokenizer.encode(text_a, text_b, is_split_into_words=split)]))
    return (out.start_logits[0], out.end_logits[0]) if head == "qa" else out.logits[0]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------- classification

TEXTS = ["the film was good .", "bad", "a very very very bad plot , the book is good .", "", "the plot"]


def test_text_lines_give_probabilities_in_input_order(models, tmp_path):
    source = write(tmp_path / "texts.txt", "\n".join(TEXTS) + "\n")
    out = tmp_path / "out.jsonl"
    predict(PredictArgs(models["classification"], source, out, batch_size=2))
    records = read_jsonl(out)
    assert len(records) == len(TEXTS)  # the blank line too
    for text, record in zip(TEXTS, records):
        probabilities = torch.softmax(alone(models["classification"], "classification", text), -1)
        assert list(record["probabilities"]) == ["bad", "good", "meh"]
        assert list(record["probabilities"].values()) == pytest.approx(probabilities.tolist(), abs=1e-5)
        assert record["label"] == ["bad", "good", "meh"][int(probabilities.argmax())]


def test_pairs_tabs_pipes_and_tables_agree(models, tmp_path):
    pairs = [("the film", "was good ."), ("anna visited paris", "who met smith ?"), ("bad", "good")]
    tabs = write(tmp_path / "tabs.txt", "".join(f"{a}\t{b}\n" for a, b in pairs))
    pipes = write(tmp_path / "pipes.txt", "".join(f"{a} ||| {b}\n" for a, b in pairs))
    csv = write(tmp_path / "pairs.csv", "sentence1,sentence2\n" + "".join(f'"{a}","{b}"\n' for a, b in pairs))
    jsonl = write(tmp_path / "pairs.jsonl", "".join(json.dumps({"q": a, "s": b}) + "\n" for a, b in pairs))
    outputs = []
    for i, (source, columns) in enumerate([(tabs, None), (pipes, None), (csv, None), (jsonl, ["q", "s"])]):
        predict(PredictArgs(models["classification"], source, tmp_path / f"{i}.jsonl", text_columns=columns))
        outputs.append(read_jsonl(tmp_path / f"{i}.jsonl"))
    assert all(o == outputs[0] for o in outputs[1:])  # the same examples in the same batches
    for (a, b), record in zip(pairs, outputs[0]):
        expected = torch.softmax(alone(models["classification"], "classification", a, b), -1)
        assert list(record["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-5)


def test_regression_values(models, tmp_path):
    source = write(tmp_path / "texts.tsv", "text\tscore\n" + "".join(f"{t}\t1.0\n" for t in TEXTS[:3]))
    out = tmp_path / "values.jsonl"
    predict(PredictArgs(models["regression"], source, out))
    values = [r["value"] for r in read_jsonl(out)]
    assert values == pytest.approx([float(alone(models["regression"], "classification", t)[0]) for t in TEXTS[:3]],
                                   abs=1e-5)


def test_the_command_line_writes_to_stdout(models, tmp_path, capsys):
    source = write(tmp_path / "texts.txt", "the film was good .\nbad plot\n")
    assert bertkit_cli.main(["predict", "--model", str(models["classification"]), "--input", str(source),
                             "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["label"] for line in captured.out.splitlines()] == \
        [r["label"] for r in _predicted(models["classification"], source, tmp_path)]
    assert "wrote 2 predictions to stdout" in captured.err


def test_compiled_predictions_equal_eager(models, tmp_path, capsys):
    """--compile (the encoder compiled with its weights frozen in) predicts what eager does."""
    source = write(tmp_path / "texts.txt", "\n".join(TEXTS) + "\n")
    assert bertkit_cli.main(["predict", "--model", str(models["classification"]), "--input", str(source),
                             "--compile", "--batch-size", "2", "--no-progress"]) == 0
    compiled = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    eager = _predicted(models["classification"], source, tmp_path)
    assert [r["label"] for r in compiled] == [r["label"] for r in eager]
    for ours, theirs in zip(compiled, eager):
        assert list(ours["probabilities"].values()) == pytest.approx(list(theirs["probabilities"].values()), abs=1e-5)


def _predicted(model: Path, source: Path, tmp_path: Path) -> list[dict]:
    predict(PredictArgs(model, source, tmp_path / "check.jsonl"))
    return read_jsonl(tmp_path / "check.jsonl")


# ----------------------------------------------------------------------------- token classification

SENTENCES = [["anna", "smith", "visited", "parisville", "."], ["the", "film"], ["who", "met", "anna", "?", "a", "b"]]


def expected_tags(model_dir: Path, words: list[str]) -> list[str]:
    """Argmax at each word's first piece, the model run on the sentence alone."""
    enc = load_tokenizer(model_dir).encode(words, is_split_into_words=True)
    logits = alone(model_dir, "token_classification", words, split=True)
    first = ner.first_piece_mask(enc.word_ids)
    return [TAGS[int(logits[i].argmax())] for i, f in enumerate(first) if f]


def test_conll_in_conll_out(models, tmp_path):
    lines = ["-DOCSTART- -X- -X- O", ""]
    for sentence in SENTENCES:
        lines += [f"{w} NN I-NP O" for w in sentence] + [""]
    source = write(tmp_path / "in.conll", "\n".join(lines) + "\n")
    out = tmp_path / "out.conll"
    predict(PredictArgs(models["token_classification"], source, out, batch_size=2))
    written = out.read_text().splitlines()
    assert [line.rsplit(" ", 1)[0] for line in written] == [line.rsplit(" ", 1)[0] for line in lines]
    tags = [s.labels for s in ner.read_ner(out).sentences]
    assert tags == [expected_tags(models["token_classification"], s) for s in SENTENCES]


def test_plain_text_in_slash_tags_out(models, tmp_path):
    source = write(tmp_path / "in.txt", " ".join(SENTENCES[0]) + "\n\n" + "\n".join(" ".join(s) for s in SENTENCES[1:])
                   + "\n")
    out = tmp_path / "out.txt"
    predict(PredictArgs(models["token_classification"], source, out))
    written = out.read_text().splitlines()
    assert written[1] == "" and len(written) == 4
    for sentence, line in zip(SENTENCES, [written[0], *written[2:]]):
        pairs = [token.rsplit("/", 1) for token in line.split(" ")]
        assert [w for w, _ in pairs] == sentence
        assert [t for _, t in pairs] == expected_tags(models["token_classification"], sentence)


def test_cluener_in_cluener_out(models, tmp_path):
    records = [{"text": "anna visited paris", "label": {"name": {"anna": [[0, 3]]}}}, {"text": "the film"}]
    source = write(tmp_path / "in.json", "".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.json"
    predict(PredictArgs(models["token_classification"], source, out, max_seq_length=8))  # windows of 6 characters
    written = read_jsonl(out)
    assert [r["text"] for r in written] == [r["text"] for r in records]
    assert all(isinstance(r["label"], dict) for r in written)


def test_conll_detection():
    assert looks_like_conll(["EU NNP B-NP B-ORG", "rejects VBZ B-VP O", ""])
    assert looks_like_conll(["-DOCSTART-", "", "EU", "rejects"])
    assert looks_like_conll(["@paul\tB-person", "hi\tO"])
    assert not looks_like_conll(["EU rejects German call", "to boycott British lamb ."])
    assert not looks_like_conll(["good O", "bad plot O"])


# ----------------------------------------------------------------------------- question answering

SQUAD = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
    {"context": "anna smith visited paris . the film was very good .",
     "qas": [{"id": "q1", "question": "who visited paris ?", "answers": []},
             {"id": "q2", "question": "where did anna go ?", "answers": []}]},
    {"context": "the book is bad .", "qas": [{"id": "q3", "question": "the book ?", "answers": []}]}]}]}


def test_squad_predictions(models, tmp_path):
    from bertkit.tasks.squad import SquadConfig, create_features, read_squad
    from bertkit.tasks.squad_predict import compute_predictions

    source = write(tmp_path / "dev.json", json.dumps(SQUAD))
    out = tmp_path / "out"
    predict(PredictArgs(models["qa"], source, out, max_seq_length=14, doc_stride=4, max_query_length=4))  # windows
    predictions = json.loads((out / "predictions.json").read_text())
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    assert list(predictions) == ["q1", "q2", "q3"] and not (out / "null_odds.json").exists()
    contexts = {"q1": SQUAD["data"][0]["paragraphs"][0]["context"], "q2": SQUAD["data"][0]["paragraphs"][0]["context"],
                "q3": SQUAD["data"][0]["paragraphs"][1]["context"]}
    assert all(predictions[q] in contexts[q] and nbest[q][0]["text"] == predictions[q] for q in predictions)
    # the same answers from the model run on each window alone
    tokenizer = load_tokenizer(models["qa"])
    examples = read_squad(source).examples
    features = create_features(tokenizer, examples, SquadConfig(14, 4, 4))
    assert len(features) > len(examples)
    from bertkit.convert.load import load_model

    model = load_model(models["qa"], "qa")
    starts, ends = [], []
    with torch.no_grad():
        for f in features:
            o = model(**tokenizer.pad([f.encoding]))
            starts.append(o.start_logits[0].numpy())
            ends.append(o.end_logits[0].numpy())
    assert compute_predictions(examples, features, starts, ends).predictions == predictions


# ----------------------------------------------------------------------------- errors


def test_errors(models, tmp_path, capsys):
    text = write(tmp_path / "texts.txt", "the film\n")
    with pytest.raises(BertkitError, match="has no fine-tuned task head .*predict needs a model made by bertkit finetune"):
        predict(PredictArgs(models["encoder"], text))
    with pytest.raises(BertkitError, match=r"empty\.txt: no text to predict"):
        predict(PredictArgs(models["classification"], write(tmp_path / "empty.txt", "\n \n")))
    with pytest.raises(BertkitError, match=r"missing\.txt: no such file"):
        predict(PredictArgs(models["classification"], tmp_path / "missing.txt"))
    with pytest.raises(BertkitError, match=r"binary\.txt: not UTF-8"):
        predict(PredictArgs(models["classification"], write(tmp_path / "binary.txt", b"\xff\xfe\x00x")))
    with pytest.raises(BertkitError, match=r"three\.txt: line 2: 3 tab-separated fields"):
        predict(PredictArgs(models["classification"], write(tmp_path / "three.txt", "a\tb\na\tb\tc\n")))
    with pytest.raises(BertkitError, match=r"empty\.csv: no rows"):
        predict(PredictArgs(models["classification"], write(tmp_path / "empty.csv", "text,label\n")))
    with pytest.raises(BertkitError, match=r"ragged\.conll: line 2: expected 4 columns"):
        predict(PredictArgs(models["token_classification"], write(tmp_path / "ragged.conll", "-DOCSTART- -X- -X- O\n"
                                                                  "a NN I-NP\n")))
    with pytest.raises(BertkitError, match="pass --output DIR"):
        predict(PredictArgs(models["qa"], write(tmp_path / "q.json", json.dumps(SQUAD))))
    with pytest.raises(BertkitError, match=r"bad\.json: not JSON"):
        predict(PredictArgs(models["qa"], write(tmp_path / "bad.json", "{"), tmp_path / "out"))
    with pytest.raises(BertkitError, match="--max-seq-length must be 3..128"):
        predict(PredictArgs(models["classification"], text, max_seq_length=512))
    with pytest.raises(BertkitError, match="has no qa head weights"):
        predict(PredictArgs(models["classification"], text, head="qa"))
    with pytest.raises(BertkitError, match="does not fit a token-classification model"):
        predict(PredictArgs(models["token_classification"], text, input_format="table"))
    # on the command line: one line on stderr, exit code 2
    assert bertkit_cli.main(["predict", "--model", str(models["encoder"]), "--input", str(text)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertkit: error: ") and err.count("\n") == 1



def test_hf_tagger_and_bf16(models, tmp_path):
    """An HF checkpoint says its head in config.json's architectures; bf16 autocast runs on CPU too."""
    from bertkit.convert.checkpoint import export_hf
    from bertkit.convert.load import load_model

    hf = export_hf(load_model(models["token_classification"], "token_classification"), tmp_path / "hf",
                   models["token_classification"] / "vocab.txt", True)
    words = ["anna", "smith", "visited", "paris", "."]
    source = write(tmp_path / "in.txt", " ".join(words) + "\n")
    out = tmp_path / "out.txt"
    predict(PredictArgs(hf, source, out))
    assert [t.rsplit("/", 1)[1] for t in out.read_text().split()] == \
        expected_tags(models["token_classification"], words)
    predict(PredictArgs(models["token_classification"], source, tmp_path / "bf16.txt", precision="bf16"))
    assert [t.rsplit("/", 1)[0] for t in (tmp_path / "bf16.txt").read_text().split()] == words
