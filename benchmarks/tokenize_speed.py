"""Tokenization speed, side by side in one run: bertkit vs transformers' BertTokenizerFast vs Google.

Every line of the corpus text files is one input. Each tokenizer encodes all of them as BERT inputs
([CLS] text [SEP], at most 512 tokens) with the same uncased vocabulary; the script prints throughput
and checks that the three agree id for id (so token for token).

    python benchmarks/tokenize_speed.py [--corpus DIR] [--parts books] [--google-bert DIR]

--google-bert names a checkout of github.com/google-research/bert (tokenization.py is imported from
it; it is not part of bertkit). That file imports `six` and `tensorflow` (only for tf.gfile.GFile in
load_vocab); without them installed, put stubs on PYTHONPATH (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import tokenizers

from bertkit.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MAX_LENGTH = 512
Runner = Callable[[], list[list[int]]]  # encodes all lines, returns the ids of each


def read_lines(corpus: Path, parts: list[str]) -> list[str]:
    """Every non-empty line of every *.txt file under corpus/<part>, in sorted file order."""
    files = sorted(f for part in parts for f in (corpus / part).rglob("*.txt"))
    if not files:
        raise SystemExit(f"{corpus}: no .txt files under {', '.join(parts)}")
    return [line for f in files for line in f.read_text(encoding="utf-8").split("\n") if line]


def run_all(runners: dict[str, Runner], repeat: int) -> dict[str, tuple[list[float], list[list[int]]]]:
    """Wall-clock seconds of each runner, `repeat` rounds interleaved (Google once), and its last output."""
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[str, list[list[int]]] = {}
    for round_ in range(repeat):
        for name, run in runners.items():
            if name == "google" and round_ > 0:
                continue
            outputs.pop(name, None)  # free the previous output before timing again
            gc.collect()
            start = time.perf_counter()
            outputs[name] = run()
            seconds[name].append(time.perf_counter() - start)
    return {name: (seconds[name], outputs[name]) for name in runners}


def bertkit_runner(vocab: Path, lines: list[str], read_all: bool) -> Runner:
    """encode_batch; with read_all, every field of every Encoding is read too (they are read lazily)."""
    tok = load_tokenizer(vocab, lower_case=True)
    tok.encode_batch(lines[:256])  # builds the Unicode tables and starts the thread pool

    def run() -> list[list[int]]:
        encodings = tok.encode_batch(lines, max_length=MAX_LENGTH)
        if read_all:
            for e in encodings:
                e.type_ids, e.tokens, e.offsets, e.sequence_ids, e.word_ids  # noqa: B018
        return [e.ids for e in encodings]

    return run


def transformers_runner(vocab: Path, lines: list[str], offsets: bool) -> Runner:
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(str(vocab), do_lower_case=True)
    tok(lines[:256])
    kwargs = {"truncation": True, "max_length": MAX_LENGTH, "return_offsets_mapping": offsets}
    return lambda: tok(lines, **kwargs)["input_ids"]


def google_runner(checkout: Path, vocab: Path, lines: list[str]) -> Runner:
    spec = importlib.util.spec_from_file_location("google_tokenization", checkout / "tokenization.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"{checkout}: no tokenization.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as e:
        raise SystemExit(f"{checkout}/tokenization.py: needs {e.name!r}; put a stub on PYTHONPATH") from None
    tok = module.FullTokenizer(str(vocab), do_lower_case=True)
    cls, sep = tok.vocab["[CLS]"], tok.vocab["[SEP]"]

    def run() -> list[list[int]]:
        return [[cls, *tok.convert_tokens_to_ids(tok.tokenize(t))[:MAX_LENGTH - 2], sep] for t in lines]

    return run


def agreement(ours: list[list[int]], theirs: list[list[int]], lines: list[str]) -> str:
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    note = f"; first difference at line {bad[0]}: {lines[bad[0]][:80]!r}" if bad else ""
    return f"{len(lines) - len(bad)}/{len(lines)} lines identical{note}"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    threads = os.environ.get("RAYON_NUM_THREADS", "all")
    return (f"{model}, {os.cpu_count()} CPUs (Rust threads: {threads}); Python {platform.python_version()}, "
            f"tokenizers {tokenizers.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpus",
                        help="corpus root (default ../shared/corpus)")
    parser.add_argument("--parts", default="books", help="comma-separated sub-folders of --corpus to read")
    parser.add_argument("--vocab", type=Path, default=SHARED / "golden/google/dev/model/vocab.txt",
                        help="uncased vocab.txt (default: bert-base-uncased's, from ../shared/golden)")
    parser.add_argument("--google-bert", type=Path,
                        help="checkout of google-research/bert (else no Google column)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs of each fast tokenizer, interleaved (the best and the median are reported)")
    args = parser.parse_args()

    lines = read_lines(args.corpus, args.parts.split(","))
    megabytes = sum(len(line.encode("utf-8")) for line in lines) / 1e6
    print(f"{machine()}\ncorpus: {args.corpus} [{args.parts}]: {len(lines)} lines, {megabytes:.2f} MB")

    runners = {"bertkit": bertkit_runner(args.vocab, lines, read_all=False),
               "transformers": transformers_runner(args.vocab, lines, offsets=False),
               "bertkit, fields read": bertkit_runner(args.vocab, lines, read_all=True),
               "transformers+offsets": transformers_runner(args.vocab, lines, offsets=True)}
    if args.google_bert:
        runners["google"] = google_runner(args.google_bert, args.vocab, lines)
    results = run_all(runners, args.repeat)

    ours = results["bertkit"][1]
    tokens = sum(len(ids) - 2 for ids in ours)
    best_ours = min(results["bertkit"][0])
    print(f"{tokens} WordPiece tokens (bertkit's count, after truncation to {MAX_LENGTH}, no [CLS]/[SEP]);"
          f" speed-up = the other's best time / bertkit's best time\n")
    print(f"{'tokenizer':22s} {'best s':>8s} {'median s':>9s} {'lines/s':>9s} {'MB/s':>7s} {'tokens/s':>10s} "
          f"{'bertkit speed-up':>17s}")
    for name, (seconds, _) in results.items():
        best = min(seconds)
        print(f"{name:22s} {best:8.3f} {statistics.median(seconds):9.3f} {len(lines) / best:9.0f} "
              f"{megabytes / best:7.2f} {tokens / best:10.0f} {best / best_ours:16.2f}x")
    print()
    for name, (_, ids) in results.items():
        if not name.startswith("bertkit"):
            print(f"bertkit vs {name}: {agreement(ours, ids, lines)}")


if __name__ == "__main__":
    main()
