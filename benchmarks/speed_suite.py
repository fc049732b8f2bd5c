"""bertkit against transformers' BertModel / BertForPreTraining (sdpa), identical weights, one run.

    .venv/bin/python benchmarks/speed_suite.py [--preset base | --model DIR] [--modes infer,train]
        [--lengths fixed,var,squad,short,data [--data PATH]] [--precisions fp32,bf16,bf16-weights] [--batch-size 8]
        [--repeats 3] [--threads N] [--device cpu|cuda] [--compile] [--json]

Every combination of modes × lengths × precisions (training skips bf16-weights) goes through
``bertkit.benchmark.run_benchmark``, the measurement ``bertkit benchmark`` makes: both models built
from bertkit's weights (exported with bertkit's HF converter), outputs checked equal on real tokens,
then interleaved timing with medians, real-token FLOP rate against a matmul peak measured in the
same run, and peak memory in a process per implementation. See that module for the definitions.
With --compile every configuration is measured a second time with bertkit compiled: for
inference its encoder (``compile_for_inference``), for training the whole model as ``bertkit
pretrain --compile`` runs it; transformers runs eager in both.
"""

from __future__ import annotations

import argparse
import json

from bertkit.benchmark import LENGTHS, MODES, PRECISIONS, WORKLOADS, make_spec, run_benchmark
from bertkit.benchmark_table import format_report
from bertkit.errors import BertkitError


def csv(known: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in known]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(known)} (got {text!r})")
        return items
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base", help="random weights of this size (default: base)")
    parser.add_argument("--model", help="a checkpoint directory instead of --preset")
    parser.add_argument("--modes", type=csv(MODES), default=list(MODES))
    parser.add_argument("--lengths", type=csv(WORKLOADS), default=list(LENGTHS))
    parser.add_argument("--data", help="pretraining data for the lengths 'data' (a bertkit data directory or TFRecords)")
    parser.add_argument("--precisions", type=csv(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--batch-size", type=int, help="default: 8 on CPU, 32 on CUDA")
    parser.add_argument("--repeats", type=int, help="timed batches per implementation (default: 3 on CPU, 10 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed batches first (default: 1 on CPU, 3 on CUDA)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also with bertkit compiled")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args()
    if args.data and "data" not in args.lengths:
        parser.error("--data is read by the lengths 'data': add it to --lengths")
    try:
        specs = [make_spec(args.device, mode=mode, lengths=lengths, precision=precision, batch_size=args.batch_size,
                           repeats=args.repeats, warmup=args.warmup, compile=compiled,
                           data=args.data if lengths == "data" else None)
                 for mode in args.modes for lengths in args.lengths for precision in args.precisions
                 for compiled in ((False, True) if args.compile else (False,))
                 if not (mode == "train" and precision == "bf16-weights")]
        report = run_benchmark(args.model or args.preset, specs, against="transformers", device=args.device,
                               threads=args.threads, memory=not args.no_memory)
    except BertkitError as err:
        parser.error(str(err))
    print(json.dumps(report, indent=2) if args.json else format_report(report))


if __name__ == "__main__":
    from bertkit.allocator import use_fast_allocator

    use_fast_allocator()  # both sides on tcmalloc when installed: see bertkit.allocator
    main()
