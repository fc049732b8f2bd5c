"""Forward-pass speed: bertkit vs transformers' BertModel (sdpa), identical weights, one run.

    .venv/bin/python benchmarks/forward_speed.py [--model DIR | --preset base] [--batch 32 --seq 128]

Both models get the same weights (bertkit's, exported to HF format in a temp dir), the same
inputs and the same thread count. Runs are interleaved (bertkit, transformers, bertkit, ...)
so that drifting clock speed hits both alike; the median per batch is reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext

import torch

from bertkit import build_model, export_hf, load_model, preset


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (any format); default: random weights of --preset")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    args = parser.parse_args()

    import transformers

    torch.manual_seed(0)
    ours = load_model(args.model) if args.model else build_model(preset(args.preset)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(ours, tmp)
        theirs = transformers.BertModel.from_pretrained(tmp, attn_implementation="sdpa").eval()
    ids = torch.randint(1000, ours.config.vocab_size, (args.batch, args.seq))
    types = torch.zeros_like(ids)
    mask = torch.ones_like(ids)
    tokens = args.batch * args.seq
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"model L={ours.config.num_hidden_layers} H={ours.config.hidden_size}, batch {args.batch} x {args.seq}")
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    for precision in precisions:
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext

        def run_ours():
            with torch.inference_mode(), ctx():
                ours(ids, types, mask)

        def run_theirs():
            with torch.inference_mode(), ctx():
                theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)

        run_ours(), run_theirs()  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):
            t_ours.append(time_once(run_ours))
            t_theirs.append(time_once(run_theirs))
        a, b = statistics.median(t_ours), statistics.median(t_theirs)
        print(f"{precision}: bertkit {tokens / a:,.0f} tokens/s ({a * 1000:.0f} ms/batch), "
              f"transformers {tokens / b:,.0f} tokens/s ({b * 1000:.0f} ms/batch), ratio {b / a:.2f}x")


if __name__ == "__main__":
    from bertkit.allocator import use_fast_allocator

    use_fast_allocator()  # both sides on tcmalloc when installed: see bertkit.allocator
    main()
