"""``bertkit data wiki|sentences|create|stats``: argument parsing only; the work is in the library.

Registered by ``add_data_commands(subparsers)`` from ``bertkit.cli.build_parser``. Heavy modules are
imported inside the handlers, so ``bertkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["add_data_commands"]


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cmd_wiki(args: argparse.Namespace) -> None:
    from bertkit.data.wiki import write_articles

    stats = write_articles(args.dump, args.out, per_file=args.per_file, workers=args.workers)
    print(f"wrote {stats.articles:,} articles ({stats.paragraphs:,} paragraphs, {stats.text_bytes:,} bytes) in "
          f"{stats.files} file(s) to {args.out}; skipped {stats.redirects:,} redirects, {stats.other_namespace:,} "
          f"pages outside the article namespace, {stats.empty:,} with no text", file=sys.stderr)


def cmd_sentences(args: argparse.Namespace) -> None:
    from bertkit.data.sentences import split_documents

    stats = split_documents(args.inputs, args.out, shards=args.shards, paragraphs=args.paragraphs,
                            workers=args.workers)
    print(f"wrote {stats.documents:,} documents, {stats.sentences:,} sentences in {len(stats.outputs)} shard(s) to "
          f"{args.out}; skipped {stats.empty_files} empty and {stats.binary_files} binary file(s), "
          f"{stats.empty_documents} empty document(s); {stats.replaced:,} invalid UTF-8 sequence(s) replaced",
          file=sys.stderr)


def cmd_create(args: argparse.Namespace) -> None:
    from bertkit.data.create import CreateConfig, create_pretraining_data

    config = CreateConfig(
        max_seq_length=args.max_seq_length, max_predictions_per_seq=args.max_predictions_per_seq,
        masked_lm_prob=args.masked_lm_prob, dupe_factor=args.dupe_factor, short_seq_prob=args.short_seq_prob,
        whole_word_mask=args.whole_word_mask, seed=args.seed, dynamic_masking=args.dynamic_masking,
        output_format=args.format, google_rng=args.google_rng,
    )
    manifest = create_pretraining_data(args.input, args.model or args.vocab, args.output, config,
                                       lower_case=args.lower_case, workers=args.workers, overwrite=args.overwrite,
                                       progress=True)
    _report_create(manifest, args.output)


def _report_create(manifest: dict, output: str) -> None:
    report, seconds = manifest["input"], max(manifest["seconds"], 1e-9)
    n = manifest["num_instances"]
    print(f"wrote {n:,} instances in {len(manifest['shards'])} {manifest['format']} shard(s) to {output} in "
          f"{seconds:.1f} s ({n / seconds:,.0f} instances/s, {report['bytes'] / seconds / 1e6:.2f} MB/s); input: "
          f"{len(report['files'])} file(s), {report['documents']:,} documents, {report['segments']:,} sentences, "
          f"{report['tokens']:,} tokens", file=sys.stderr)
    skipped = [(len(report["empty_files"]), "empty file(s)"), (len(report["binary_files"]), "binary file(s)"),
               (report["dropped_lines"], "line(s) with no tokens")]
    notes = [f"{count:,} {what}" for count, what in skipped if count]
    if report["replaced_characters"]:
        notes.append(f"{report['replaced_characters']:,} invalid UTF-8 sequence(s) replaced by U+FFFD")
    if report["one_segment_documents"]:
        notes.append(f"{report['one_segment_documents']:,} one-sentence document(s) (their B is always random)")
    if notes:
        print("note: skipped or changed: " + "; ".join(notes), file=sys.stderr)


def cmd_stats(args: argparse.Namespace) -> None:
    from bertkit.data.stats import data_stats, format_stats

    stats = data_stats(args.path, vocab=args.vocab, masked_lm_prob=args.masked_lm_prob, epoch=args.epoch)
    print(json.dumps(stats) if args.json else format_stats(stats))


def _add_create(sub: argparse._SubParsersAction) -> None:
    from bertkit.data.create import FORMATS, CreateConfig

    d = CreateConfig()
    p = sub.add_parser("create", help="text (one sentence per line, blank line between documents) to MLM/NSP "
                                      "pretraining data, Google's algorithm, on all cores")
    p.add_argument("--input", required=True, metavar="GLOB", help="input files: comma-separated globs or directories")
    vocab = p.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--model", metavar="DIR", help="model directory holding vocab.txt")
    vocab.add_argument("--vocab", metavar="FILE", help="vocab.txt")
    p.add_argument("--output", required=True, metavar="DIR", help="output directory (shards, vocab.txt, manifest.json)")
    p.add_argument("--max-seq-length", type=int, default=d.max_seq_length,
                   help="tokens per instance, [CLS] and [SEP]s included (default: %(default)s)")
    p.add_argument("--max-predictions-per-seq", type=int, default=d.max_predictions_per_seq,
                   help="masked slots per instance (default: %(default)s)")
    p.add_argument("--masked-lm-prob", type=float, default=d.masked_lm_prob,
                   help="share of the tokens masked (default: %(default)s)")
    p.add_argument("--dupe-factor", type=int, default=d.dupe_factor,
                   help="passes over the corpus, each with other pairs and masks (default: %(default)s)")
    p.add_argument("--short-seq-prob", type=float, default=d.short_seq_prob,
                   help="chance of a shorter target length per document and pass (default: %(default)s)")
    p.add_argument("--whole-word-mask", action="store_true", help="mask all pieces of a word together")
    case = p.add_mutually_exclusive_group()
    case.add_argument("--do-lower-case", dest="lower_case", action="store_true", default=None,
                      help="lower-case and strip accents (default: from the model directory, else guessed from the vocab)")
    case.add_argument("--no-lower-case", dest="lower_case", action="store_false", help="keep case and accents")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=_default_workers(),
                   help="processes; the output does not depend on it (default: all cores, %(default)s)")
    p.add_argument("--format", choices=FORMATS, default=d.output_format,
                   help="bertkit shards, or Google's TFRecord layout with the records in the shuffled order "
                        "of --seed (default: %(default)s)")
    p.add_argument("--dynamic-masking", action="store_true", help="store unmasked instances; draw masks per epoch when read")
    p.add_argument("--google-rng", action="store_true",
                   help="Google's exact random stream (one process): reproduces Google's records for the same flags")
    p.add_argument("--overwrite", action="store_true", help="replace finished data in --output")
    p.set_defaults(func=cmd_create)


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``data`` and its subcommands on the top-level parser's subparsers."""
    data = subparsers.add_parser("data", help="pretraining data: Wikipedia dump -> sentences -> instances; stats")
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    p = sub.add_parser("wiki", help="a MediaWiki XML dump (.bz2, .gz or plain) to clean article text files")
    p.add_argument("dump", metavar="DUMP")
    p.add_argument("out", metavar="OUT", help="output directory (articles-NNNNN.txt)")
    p.add_argument("--per-file", type=int, default=10000, help="articles per file (default: 10000)")
    p.add_argument("--workers", type=int, default=_default_workers(), help="processes (default: all cores)")
    p.set_defaults(func=cmd_wiki)

    p = sub.add_parser("sentences", help="documents to Google's pretraining text: one sentence per line")
    p.add_argument("inputs", nargs="+", metavar="IN", help="article files, text files or directories of *.txt")
    p.add_argument("out", metavar="OUT", help="output directory (sentences-NNNNN-of-NNNNN.txt)")
    p.add_argument("--shards", type=int, default=1, help="output files, balanced by size (default: 1)")
    p.add_argument("--paragraphs", choices=("auto", "lines", "blocks"), default="auto",
                   help="how plain-text lines make paragraphs (default: auto)")
    p.add_argument("--workers", type=int, default=_default_workers(), help="processes (default: all cores)")
    p.set_defaults(func=cmd_sentences)

    _add_create(sub)

    p = sub.add_parser("stats", help="statistics of pretraining data (a bertkit directory or TFRecord files)")
    p.add_argument("path", metavar="PATH", help="bertkit data directory, or TFRecord file(s): file, directory or glob")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--vocab", metavar="FILE", help="vocab.txt, for the ## and whole-word statistics of TFRecords")
    p.add_argument("--masked-lm-prob", type=float, default=None,
                   help="for the num_to_predict check of TFRecords (a bertkit directory records it)")
    p.add_argument("--epoch", type=int, default=0, help="the epoch whose masks dynamic-masking data is measured with")
    p.set_defaults(func=cmd_stats)
