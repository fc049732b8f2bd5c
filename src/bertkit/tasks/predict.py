"""``bertkit predict``: a fine-tuned model's predictions for a file, whatever its task head.

  bertkit predict --model CLASSIFIER --input texts.txt [--output predictions.jsonl]
  bertkit predict --model NER_MODEL --input sentences.conll [--output tagged.conll]
  bertkit predict --model SQUAD_MODEL --input dev-v1.1.json --output DIR
  bertkit predict --model NQ_MODEL --input nq-dev.jsonl.gz --output predictions.json

What is read and written follows the model's head (bertkit.json's "head", HF's "architectures";
--head for a checkpoint that does not say, e.g. a Google fine-tuned classifier):

classification (and regression)
  input: text lines, one example a line: a text, or a pair as "a<TAB>b" or Google's "a ||| b";
  or a .csv/.tsv/.jsonl file with a header / fields (the text columns as --text-columns, else
  sentence1,sentence2 / text_a,text_b / text / ...). Output: JSON Lines, one object per example
  in the input's order (text lines: one per line, blank lines too): {"label": NAME,
  "probabilities": {NAME: p, ...}}; regression {"value": x}.
token_classification
  input: a CoNLL file (a token per line, blank lines between sentences; the tags, if any, last),
  CLUENER JSON lines (.json/.jsonl), or plain text lines of whitespace-separated words. Output in
  the input's format: the CoNLL file with its last column replaced by the predicted tag (a column
  added when it has none), the JSON lines with predicted "label" spans, or each text line as
  word/TAG pairs ("EU/B-ORG rejects/O ...", Stanford's slash tags; a blank line stays blank).
  A one-word-per-line CoNLL file without tags reads as text unless --input-format conll.
qa
  input: a SQuAD v1.1 / v2.0 JSON file; output: the directory --output with predictions.json,
  nbest_predictions.json and, for v2.0, null_odds.json (as Google's run_squad.py writes them).
nq
  input: Natural Questions simplified jsonl(.gz); output: the file --output, {"predictions": [...]}
  in the official format (``bertkit evaluate nq`` scores it), windowed and marked as the model was
  fine-tuned (its config's "nq" settings; --max-seq-length, --doc-stride and --max-query-length
  override theirs).

Examples run in batches sorted by length (a progress bar on stderr); without --output the
classification and tagging output goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertkit.errors import BertkitError, file_error
from bertkit.tasks.finetune_squad import AnswerArgs

if TYPE_CHECKING:
    from torch import nn

    from bertkit.convert.checkpoint import Checkpoint
    from bertkit.tasks.classification import Example
    from bertkit.tasks.finetune import Runner
    from bertkit.tasks.ner import NerData
    from bertkit.tokenizer import BertTokenizer

HEADS = ("classification", "token_classification", "qa", "nq")
INPUT_FORMATS = ("auto", "text", "table", "conll", "cluener", "squad")
DEFAULT_LENGTH = {"classification": 128, "token_classification": 128, "qa": 384, "nq": 512}
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
_HF_HEADS = {"BertForSequenceClassification": "classification", "BertForTokenClassification": "token_classification",
             "BertForQuestionAnswering": "qa"}
_PAIR = re.compile(r"^(.*) \|\|\| (.*)$")  # Google's extract_features.py pair separator
_TAG = re.compile(r"O|[BIESLU]-\S+")  # a BIO / BIOES tag, how a CoNLL file's last column looks


@dataclass
class PredictArgs:
    model: Path  # a fine-tuned checkpoint directory (any format)
    input: Path
    output: Path | None = None  # a file (qa: a directory); None: stdout
    batch_size: int = 64
    precision: str = "fp32"  # fp32 or bf16 (autocast)
    compile: bool = False  # torch.compile the encoder with the weights frozen in (compile_for_inference)
    max_seq_length: int | None = None  # pieces per input (default: 128, qa 384)
    input_format: str = "auto"  # auto: by the head and the file's extension / content
    head: str | None = None  # None: the checkpoint's
    text_columns: list[str] | None = None  # classification tables: the text column(s)
    lower_case: bool | None = None  # tokenizer casing (default: the checkpoint's)
    device: str | None = None  # default: CUDA when there is one
    doc_stride: int | None = None  # qa, nq: pieces between context windows (default: 128; nq the model's)
    max_query_length: int | None = None  # qa, nq: longer questions keep their first pieces (default: 64)
    answers: AnswerArgs = field(default_factory=AnswerArgs)  # qa, nq: n-best size, answer length, null threshold
    progress: bool = True

    def __post_init__(self) -> None:
        self.model, self.input = Path(self.model), Path(self.input)
        if self.batch_size < 1:
            raise BertkitError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.precision not in ("fp32", "bf16"):
            raise BertkitError(f"--precision must be fp32 or bf16, not {self.precision!r}")
        if self.input_format not in INPUT_FORMATS:
            raise BertkitError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}, not {self.input_format!r}")
        if self.head is not None and self.head not in HEADS:
            raise BertkitError(f"--head must be one of {', '.join(HEADS)}, not {self.head!r}")


def predict(args: PredictArgs) -> str:
    """Predict args.input with args.model and write the output; returns a one-line summary."""
    import torch

    from bertkit.convert.checkpoint import read_checkpoint
    from bertkit.convert.load import model_from_checkpoint
    from bertkit.tasks.inference import run_model
    from bertkit.tokenizer import load_tokenizer

    if not args.input.is_file():
        raise file_error(args.input, "no such file" if not args.input.exists() else "not a file")
    ckpt = read_checkpoint(args.model)
    head = model_head(ckpt, args.head)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model_from_checkpoint(ckpt, head, device=device)
    if args.compile:
        from bertkit.model import compile_for_inference

        compile_for_inference(model.eval())
    tokenizer = load_tokenizer(args.model, lower_case=args.lower_case)
    default = DEFAULT_LENGTH[head]
    if head == "nq":
        from bertkit.tasks.finetune_nq import settings_of

        default = settings_of(model.config).max_seq_length
    length = args.max_seq_length or min(default, model.config.max_position_embeddings)
    if not 3 <= length <= model.config.max_position_embeddings:
        raise BertkitError(f"--max-seq-length must be 3..{model.config.max_position_embeddings} "
                           f"(the model's positions), not {length}")
    run = partial(run_model, batch_size=args.batch_size, precision=args.precision, device=device,
                  progress=args.progress, desc="predicting")
    predictors = {"classification": predict_classification, "token_classification": predict_tags, "qa": predict_qa,
                  "nq": predict_nq}
    return predictors[head](model, tokenizer, run, args, length)


def model_head(ckpt: Checkpoint, override: str | None = None) -> str:
    """The task head to predict with: ``override`` when the checkpoint has its weights, else the
    one the checkpoint was saved with (bertkit.json, HF architectures) or holds."""
    from bertkit.convert.keymaps import HEAD_PREFIXES

    if override is not None:
        if not all(any(n.startswith(p) for n in ckpt.tensors) for p in HEAD_PREFIXES[override]):
            raise file_error(ckpt.path, f"has no {override} head weights")
        return override
    heads = [h for h in ckpt.heads() if h != "pretraining"]
    if not heads:
        raise file_error(ckpt.path, "has no fine-tuned task head (a pretrained encoder?): predict needs a model "
                                    "made by bertkit finetune (or another fine-tuned checkpoint)")
    if ckpt.format == "hf" and heads == ["classification"]:
        heads = [_hf_head(ckpt.path) or "classification"]
    supported = [h for h in heads if h in HEADS]
    if len(supported) != 1:
        raise file_error(ckpt.path, f"has the heads {heads}: say which to predict with, --head {'|'.join(HEADS)}")
    return supported[0]


def _hf_head(path: Path) -> str | None:
    """classification or token_classification, as an HF config.json's "architectures" says."""
    try:
        architectures = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    return next((_HF_HEADS[a] for a in architectures if a in _HF_HEADS), None)


def _emit(output: Path | None, text: str) -> str:
    """Write text to the output file (atomically), or to stdout; returns where it went."""
    from bertkit.io import atomic_write_text

    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return "stdout"
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, text)
    return str(output)


# ----------------------------------------------------------------------------- classification


def predict_classification(model: nn.Module, tokenizer: BertTokenizer, run: Runner, args: PredictArgs,
                           length: int) -> str:
    """JSON Lines: {"label", "probabilities"} per example, or {"value"} for regression."""
    from bertkit.tasks.classification import encode_examples

    examples = read_classification_input(args.input, args.input_format, args.text_columns)
    data = encode_examples(tokenizer, examples, length, None, "input", labelled=False)
    features = tokenizer.pad(data.encodings, return_tensors="np")
    logits = run(model, features, ["logits"])["logits"]  # (N, C)
    records = classification_records(logits, model.config.label_names)
    where = _emit(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return f"{len(records)} predictions to {where}"


def classification_records(logits: Any, label_names: list[str] | None) -> list[dict[str, Any]]:
    """Per example: the predicted label and every label's probability; one output: the value."""
    import numpy as np

    from bertkit.tasks.classification import softmax

    if logits.shape[1] == 1:
        return [{"value": float(v)} for v in logits[:, 0]]
    names = label_names or [str(i) for i in range(logits.shape[1])]
    probabilities = softmax(logits)  # (N, C)
    return [{"label": names[int(np.argmax(row))], "probabilities": {n: float(p) for n, p in zip(names, row)}}
            for row in probabilities]


def read_classification_input(path: Path, input_format: str = "auto",
                              text_columns: list[str] | None = None) -> list[Example]:
    """A table (.csv/.tsv/.jsonl/.json, or input_format "table") through ``custom.read_custom``,
    else text lines (``read_text_examples``)."""
    from bertkit.tasks.custom import read_custom

    if input_format not in ("auto", "text", "table"):
        raise BertkitError(f"--input-format {input_format} does not fit a classification model (text or table)")
    if input_format == "table" or (input_format == "auto" and path.suffix.lower() in TABLE_SUFFIXES):
        return read_custom(path, text_columns, labelled=False, split="input")
    return read_text_examples(path)


def read_text_examples(path: Path) -> list[Example]:
    """An example per line: a text, or a pair "a<TAB>b" / "a ||| b" (stripped, as Google's reader)."""
    from bertkit.tasks.classification import Example
    from bertkit.tasks.files import read_lines

    lines = read_lines(path)
    if not any(line.strip() for line in lines):
        raise file_error(path, "no text to predict")
    return [Example(f"input-{n - 1}", *_text_pair(path, n, line), None, f"{path}:{n}")  # type: ignore[misc]
            for n, line in enumerate(lines, start=1)]


def _text_pair(path: Path, number: int, line: str) -> tuple[str, str | None]:
    fields = line.split("\t")
    if len(fields) > 2:
        raise file_error(path, f"line {number}: {len(fields)} tab-separated fields; expected a text or a pair")
    if len(fields) == 2:
        return fields[0].strip(), fields[1].strip()
    match = _PAIR.match(line.strip())
    return (match.group(1), match.group(2)) if match else (line.strip(), None)


# ----------------------------------------------------------------------------- token classification


def predict_tags(model: nn.Module, tokenizer: BertTokenizer, run: Runner, args: PredictArgs, length: int) -> str:
    """Tags for a CoNLL, CLUENER or plain-text file, written back in its format."""
    from bertkit.tasks import ner

    labels = model.config.label_names
    if not labels:
        raise file_error(args.model, "its token-classification head has no tag names (label_names / id2label)")
    input_format = ner_input_format(args.input, args.input_format)
    data = read_text_sentences(args.input) if input_format == "text" else ner.read_ner(args.input, input_format)
    if not data.sentences:
        raise file_error(args.input, "no sentences to tag")
    features = ner.create_features(tokenizer, data, None, length)
    logits = run(model, ner.collate(tokenizer, features, return_tensors="np"), ["logits"])["logits"]  # (F, T, C)
    tags = ner.predict_tags(data, features, logits, labels)
    text = slash_tags(data, tags) if input_format == "text" else ner.predictions_text(data, tags)
    return f"tags for {len(data.sentences)} sentences to {_emit(args.output, text)}"


def ner_input_format(path: Path, input_format: str = "auto") -> str:
    """conll, cluener or text: as given, else .json/.jsonl is CLUENER, a file that looks like
    CoNLL (``looks_like_conll``) is CoNLL, anything else text lines."""
    from bertkit.tasks.files import read_lines

    if input_format in ("conll", "cluener", "text"):
        return input_format
    if input_format != "auto":
        raise BertkitError(f"--input-format {input_format} does not fit a token-classification model "
                           "(conll, cluener or text)")
    if path.suffix.lower() in (".json", ".jsonl"):
        return "cluener"
    return "conll" if looks_like_conll(read_lines(path)) else "text"


def looks_like_conll(lines: list[str]) -> bool:
    """A -DOCSTART- line, or every token line with the same number (two or more) of columns and a
    tag (O, B-X, I-X, ...) in the last."""
    rows = [line.split() for line in lines if line.strip()]
    if any(row[0] == "-DOCSTART-" for row in rows):
        return True
    return bool(rows) and len({len(r) for r in rows}) == 1 and len(rows[0]) >= 2 and \
        all(_TAG.fullmatch(r[-1]) for r in rows)


def read_text_sentences(path: Path) -> NerData:
    """A sentence per non-blank line, its words split on whitespace (no tags)."""
    from bertkit.tasks.files import read_lines
    from bertkit.tasks.ner import NerData, NerSentence

    lines = read_lines(path)
    words = [(n, line.split()) for n, line in enumerate(lines, start=1) if line.strip()]
    sentences = [NerSentence(w, None, [n] * len(w)) for n, w in words]
    return NerData(path, "text", sentences, raw_lines=lines)


def slash_tags(data: NerData, tags: list[list[str]]) -> str:
    """Every input line as "word/TAG word/TAG ..."; blank lines stay blank."""
    out = [""] * len(data.raw_lines)
    for sentence, predicted in zip(data.sentences, tags):
        out[sentence.lines[0] - 1] = " ".join(f"{w}/{t}" for w, t in zip(sentence.words, predicted))
    return "".join(line + "\n" for line in out)


# ----------------------------------------------------------------------------- question answering


def predict_qa(model: nn.Module, tokenizer: BertTokenizer, run: Runner, args: PredictArgs, length: int) -> str:
    """predictions.json, nbest_predictions.json (and v2.0's null_odds.json) in args.output."""
    from bertkit.tasks.finetune_squad import answer_questions, feature_arrays
    from bertkit.tasks.squad import SquadConfig, create_features, read_squad
    from bertkit.tasks.squad_predict import write_predictions

    if args.input_format not in ("auto", "squad"):
        raise BertkitError(f"--input-format {args.input_format} does not fit a QA model (squad)")
    if args.output is None:
        raise BertkitError("a QA model writes predictions.json and nbest_predictions.json: pass --output DIR")
    if args.output.is_file():
        raise file_error(args.output, "is a file: a QA model's --output is a directory (predictions.json, ...)")
    data = read_squad(args.input)
    if not data.examples:
        raise file_error(args.input, "no questions to answer")
    defaults = SquadConfig()
    config = SquadConfig(length, args.doc_stride or defaults.doc_stride, args.max_query_length or defaults.max_query_length)
    features = create_features(tokenizer, data.examples, config)
    predictions = answer_questions(model, run, data.examples, features, feature_arrays(tokenizer, features),
                                   args.answers, data.version_2)
    args.output.mkdir(parents=True, exist_ok=True)
    write_predictions(args.output, predictions)
    return f"answers to {len(data.examples)} questions in {args.output}"


def predict_nq(model: nn.Module, tokenizer: BertTokenizer, run: Runner, args: PredictArgs, length: int) -> str:
    """The official-format predictions.json (args.output) for an NQ jsonl(.gz) file."""
    from dataclasses import replace

    from bertkit.io import atomic_write_text
    from bertkit.tasks.finetune_nq import (
        predict_windows,
        prediction_windows,
        settings_of,
    )
    from bertkit.tasks.nq import N_BEST_SIZE

    if args.input_format != "auto":
        raise BertkitError(f"--input-format {args.input_format} does not fit an NQ model (NQ jsonl, read as such)")
    if args.output is None or args.output.is_dir():
        raise BertkitError("an NQ model writes one JSON file of predictions: pass --output FILE")
    saved = settings_of(model.config)
    config = replace(saved, max_seq_length=length, doc_stride=args.doc_stride or saved.doc_stride,
                     max_query_length=args.max_query_length or saved.max_query_length)
    examples, features, inputs, _ = prediction_windows(tokenizer, args.input, config)
    if not examples:
        raise file_error(args.input, "no NQ examples to answer")
    predictions = predict_windows(model, run, examples, features, inputs,
                                  n_best_size=args.answers.n_best(N_BEST_SIZE),
                                  max_answer_length=args.answers.max_answer_length)
    atomic_write_text(args.output, json.dumps({"predictions": predictions}) + "\n")
    return f"answers to {len(examples)} NQ examples in {args.output}"


# ----------------------------------------------------------------------------- command line


def add_predict_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bertkit predict``."""
    from bertkit.tasks.finetune_squad import N_BEST_SIZE as SQUAD_N_BEST
    from bertkit.tasks.nq import N_BEST_SIZE as NQ_N_BEST
    from bertkit.tasks.squad import SquadConfig

    p = subparsers.add_parser("predict",
                              help="predict a file with a fine-tuned model (classification, NER, SQuAD, NQ)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, metavar="PATH", help="a fine-tuned checkpoint directory")
    p.add_argument("--input", required=True, type=Path, metavar="FILE")
    p.add_argument("--output", type=Path, metavar="PATH",
                   help="the output file (default: stdout); qa: a directory; nq: a JSON file")
    p.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="default: %(default)s")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder with its weights frozen in: faster on large inputs, after a "
                        "compilation of tens of seconds (see benchmarks/README.md)")
    p.add_argument("--max-seq-length", type=int, help="pieces per input (default: 128; qa 384)")
    p.add_argument("--input-format", choices=INPUT_FORMATS, default="auto",
                   help="text, table (CSV/TSV/JSONL by extension), conll, cluener, squad (default: by the head "
                        "and the file)")
    p.add_argument("--head", choices=HEADS, help="the head to use (default: the checkpoint's)")
    p.add_argument("--text-columns", metavar="A[,B]", type=lambda s: s.split(","),
                   help="classification tables: the text column(s)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when there is one)")
    case = p.add_mutually_exclusive_group()
    case.add_argument("--cased", dest="lower_case", action="store_false", default=None,
                      help="keep case and accents (default: from the checkpoint/vocab)")
    case.add_argument("--uncased", dest="lower_case", action="store_true", help="lower-case and strip accents")
    q, a = SquadConfig(), AnswerArgs()
    g = p.add_argument_group("qa and nq")
    g.add_argument("--doc-stride", type=int, help=f"default: {q.doc_stride}; nq: the model's")
    g.add_argument("--max-query-length", type=int, help=f"default: {q.max_query_length}; nq: the model's")
    g.add_argument("--n-best-size", type=int,
                   help=f"candidates per question (default: the head's: qa {SQUAD_N_BEST}, nq {NQ_N_BEST})")
    g.add_argument("--max-answer-length", type=int, default=a.max_answer_length, help="default: %(default)s")
    g.add_argument("--null-score-diff-threshold", type=float, default=a.null_threshold,
                   help="v2.0: no answer when the null odds exceed this (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def cmd_predict(ns: argparse.Namespace) -> None:
    args = PredictArgs(model=ns.model, input=ns.input, output=ns.output, batch_size=ns.batch_size,
                       precision=ns.precision, compile=ns.compile, max_seq_length=ns.max_seq_length, input_format=ns.input_format,
                       head=ns.head, text_columns=ns.text_columns, lower_case=ns.lower_case, device=ns.device,
                       doc_stride=ns.doc_stride, max_query_length=ns.max_query_length,
                       answers=AnswerArgs(ns.n_best_size, ns.max_answer_length, ns.null_score_diff_threshold),
                       progress=ns.progress)
    print(f"wrote {predict(args)}", file=sys.stderr)
