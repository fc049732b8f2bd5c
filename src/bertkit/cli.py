"""The ``bertkit`` command: argument parsing only; the work is done by library functions.

A user mistake (BertkitError) prints one line ``bertkit: error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence

from bertkit.config import ACTIVATIONS
from bertkit.errors import BertkitError

EXIT_USAGE = 2


def _add_model_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, metavar="PATH",
                   help="checkpoint directory: Google TF, HF or bertkit format (auto-detected)")
    p.add_argument("--hidden-act", choices=sorted(ACTIVATIONS), default=None,
                   help="override the activation: 'gelu' (erf; Google's released checkpoints, HF) or "
                        "'gelu_tanh' (Google's code since Feb 2019)")
    _add_case_options(p)


def _add_case_options(p: argparse.ArgumentParser) -> None:
    case = p.add_mutually_exclusive_group()
    case.add_argument("--cased", dest="lower_case", action="store_false", default=None,
                      help="keep case and accents (default: from the checkpoint/vocab)")
    case.add_argument("--uncased", dest="lower_case", action="store_true",
                      help="lower-case and strip accents")


def _overrides(args: argparse.Namespace) -> dict:
    return {"hidden_act": args.hidden_act} if getattr(args, "hidden_act", None) else {}


def _lower_case(ckpt) -> tuple[bool | None, str]:
    """(do_lower_case, where it came from): the checkpoint's word, else inferred from its vocab."""
    if ckpt.do_lower_case is not None or ckpt.vocab_file is None:
        return ckpt.do_lower_case, "checkpoint"
    from bertkit.tokenizer import infer_lower_case, load_vocab

    return infer_lower_case(load_vocab(ckpt.vocab_file)), "inferred from vocab"


# --- subcommands ------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> None:
    from bertkit.convert.checkpoint import read_checkpoint
    from bertkit.config import parameter_count

    ckpt = read_checkpoint(args.model)
    lower, lower_source = _lower_case(ckpt)
    total = sum(t.numel() for t in ckpt.tensors.values())
    encoder = sum(t.numel() for n, t in ckpt.tensors.items() if n.startswith("bert."))
    info = {
        "path": str(ckpt.path), "format": ckpt.format, "heads": ckpt.heads(),
        "config": ckpt.config.to_dict(),
        "parameters": {"total": total, "encoder": encoder, "heads": total - encoder,
                       "encoder_from_config": parameter_count(ckpt.config)},
        "vocab_file": str(ckpt.vocab_file) if ckpt.vocab_file else None,
        "do_lower_case": lower, "do_lower_case_source": lower_source,
        "skipped_variables": len(ckpt.skipped),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    c = ckpt.config
    print(f"{ckpt.path}: {ckpt.format} checkpoint")
    print(f"  layers {c.num_hidden_layers}, hidden {c.hidden_size}, heads {c.num_attention_heads}, "
          f"intermediate {c.intermediate_size}, vocab {c.vocab_size}, activation {c.hidden_act}")
    print(f"  task heads: {', '.join(info['heads']) or 'none'}")
    p = info["parameters"]
    print(f"  parameters: {p['total']:,} (encoder {p['encoder']:,}, heads {p['heads']:,})")
    print(f"  vocab: {info['vocab_file'] or 'none'}; lower case: "
          f"{'unknown' if lower is None else f'{lower} ({lower_source})'}")
    if ckpt.skipped:
        print(f"  skipped {len(ckpt.skipped)} non-model variables (optimizer slots, global_step)")


def cmd_convert(args: argparse.Namespace) -> None:
    from bertkit.convert.checkpoint import export_google, export_hf, read_checkpoint, save_bertkit
    from bertkit.convert.load import model_from_checkpoint

    ckpt = read_checkpoint(args.src)
    heads = ckpt.heads()
    head = args.head if args.head else (heads[0] if heads else None)
    model = model_from_checkpoint(ckpt, None if head == "none" else head, **_overrides(args))
    lower = args.lower_case if args.lower_case is not None else _lower_case(ckpt)[0]
    writers: dict[str, Callable] = {
        "bertkit": lambda: save_bertkit(model, args.dst, ckpt.vocab_file, lower),
        "hf": lambda: export_hf(model, args.dst, ckpt.vocab_file, lower),
        "google": lambda: export_google(model, args.dst, ckpt.vocab_file),
    }
    out = writers[args.to]()
    print(f"wrote {args.to} checkpoint ({head or 'encoder'}) to {out}")


def cmd_tokenize(args: argparse.Namespace) -> None:
    from bertkit.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.model or args.vocab, lower_case=args.lower_case)
    out = sys.stdout
    for line in sys.stdin:
        tokens = tokenizer.tokenize(line.rstrip("\n"))
        if args.ids:
            out.write(" ".join(map(str, tokenizer.convert_tokens_to_ids(tokens))) + "\n")
        else:
            out.write(" ".join(tokens) + "\n")


def cmd_extract(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from bertkit.convert.load import load_model
    from bertkit.extract import extract_features, parse_layers, read_examples, write_jsonl
    from bertkit.tokenizer import load_tokenizer

    examples = read_examples(args.input)  # bad input fails before the model is loaded
    model = load_model(args.model, **_overrides(args))
    layers = parse_layers(args.layers, model.config.num_hidden_layers)
    if not 2 <= args.max_seq_length <= model.config.max_position_embeddings:
        raise BertkitError(f"--max-seq-length must be 2..{model.config.max_position_embeddings}")
    tokenizer = load_tokenizer(args.model, lower_case=args.lower_case)
    features = extract_features(model, tokenizer, examples, layers, args.max_seq_length, args.batch_size)
    progress = tqdm(features, total=len(examples), unit="ex", disable=None, file=sys.stderr)
    count = write_jsonl(args.output, progress)
    print(f"wrote features for {count} examples to {args.output}", file=sys.stderr)


def cmd_benchmark(args: argparse.Namespace) -> None:
    from bertkit.benchmark import make_spec, run_benchmark
    from bertkit.benchmark_table import format_report

    spec = make_spec(args.device, mode=args.mode, lengths=args.lengths, precision=args.precision,
                     batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup, compile=args.compile,
                     data=args.data)
    report = run_benchmark(args.model, [spec], against=args.against, device=args.device,
                           threads=args.threads, memory=not args.no_memory)
    print(json.dumps(report, indent=2) if args.json else format_report(report))


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertkit", description="A complete, fast, faithful BERT system.")
    parser.add_argument("--version", action="version", version=f"bertkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="show a checkpoint's format, config and parameter counts")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="convert a checkpoint (Google TF, HF, bertkit) to another format")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--to", choices=("bertkit", "hf", "google"), default="bertkit",
                   help="output format (default: bertkit)")
    p.add_argument("--head", choices=("none", "pretraining", "classification", "token_classification", "qa"),
                   help="which head to keep (default: the one the checkpoint has)")
    p.add_argument("--hidden-act", choices=sorted(ACTIVATIONS), default=None, help="override the activation")
    _add_case_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("tokenize", help="tokenize lines from stdin (Google's FullTokenizer)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="PATH", help="checkpoint directory holding vocab.txt")
    src.add_argument("--vocab", metavar="FILE", help="vocab.txt")
    _add_case_options(p)
    p.add_argument("--ids", action="store_true", help="print token ids instead of tokens")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("extract", help="extract per-token features (Google's extract_features.py layout)")
    _add_model_options(p)
    p.add_argument("--input", required=True, metavar="FILE", help="one example per line; 'a ||| b' for pairs")
    p.add_argument("--output", required=True, metavar="FILE", help="JSON Lines output")
    p.add_argument("--layers", default="-1,-2,-3,-4", help="layers to write (default: -1,-2,-3,-4)")
    p.add_argument("--max-seq-length", type=int, default=128, help="default: 128")
    p.add_argument("--batch-size", type=int, default=32, help="default: 32")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("benchmark", help="a model's speed here (tokens/s, FLOP rate, memory), optionally against transformers")
    p.add_argument("--model", required=True, metavar="M",
                   help="checkpoint directory (any format) or preset name (random weights)")
    p.add_argument("--mode", choices=("infer", "train"), default="infer",
                   help="encoder forward, or pretraining step: MLM+NSP forward, backward, AdamW (default: infer)")
    p.add_argument("--lengths", choices=("fixed", "var", "squad", "short", "data"), default="fixed",
                   help="128 tokens; 20-128 padded per batch; 384; 5-32 padded per batch, single sentences "
                        "as in CoLA/SST-2; data: real batches from --data, cut to their longest (default: fixed)")
    p.add_argument("--data", metavar="PATH",
                   help="pretraining data for --lengths data: a `bertkit data create` directory or Google TFRecords")
    p.add_argument("--precision", choices=("fp32", "bf16", "bf16-weights"), default="fp32",
                   help="bf16: autocast; bf16-weights: weights cast to bfloat16, infer only (default: fp32)")
    p.add_argument("--against", choices=("transformers",), help="also time transformers on the same weights")
    p.add_argument("--compile", action="store_true",
                   help="infer: torch.compile bertkit's encoder with its weights frozen in, as predict --compile "
                        "does; train: the whole model under torch.compile, as pretrain --compile does "
                        "(transformers runs eager); the warm-up batches absorb the compilation")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch-size", type=int, help="sequences per batch (default: 8 on CPU, 32 on CUDA)")
    p.add_argument("--repeats", type=int, help="timed batches per implementation (default: 3 on CPU, 10 on CUDA)")
    p.add_argument("--warmup", type=int, help="untimed batches first (default: 1 on CPU, 3 on CUDA)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs (a process per implementation)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_benchmark)

    from bertkit.data.commands import add_data_commands
    from bertkit.tasks.commands import add_evaluate_command
    from bertkit.tasks.finetune import add_finetune_command
    from bertkit.tasks.predict import add_predict_command
    from bertkit.tasks.pretrain import add_plot_command, add_pretrain_command

    add_data_commands(sub)
    add_pretrain_command(sub)
    add_plot_command(sub)
    add_finetune_command(sub)
    add_evaluate_command(sub)
    add_predict_command(sub)
    return parser


def _version() -> str:
    from bertkit import __version__

    return __version__


def _join_negative_lists(argv: Sequence[str]) -> list[str]:
    """``--layers -1,-2`` as Google's docs write it: argparse would take -1,-2 for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--layers" and re.fullmatch(r"-?\d+(,-?\d+)*", arg):
            out[-1] = f"--layers={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_join_negative_lists(argv))
    try:
        args.func(args)
    except BertkitError as err:
        print(f"bertkit: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


def entry() -> int:
    """The console script: onto a fast allocator first (see bertkit.allocator), then main()."""
    from bertkit.allocator import use_fast_allocator

    try:
        use_fast_allocator()
    except BertkitError as err:
        print(f"bertkit: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return main()


if __name__ == "__main__":
    sys.exit(entry())
