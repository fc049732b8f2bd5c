"""Packed batches on CPU: attention one sequence at a time against one masked SDPA call, by width.

    .venv/bin/python benchmarks/packed_attention.py [--model DIR | --preset NAME] [--batch 32] [--precision bf16]

bertkit runs every projection, LayerNorm and FFN on the real tokens only; attention must still keep
sequences apart. One SDPA call per sequence computes no padding but pays B calls a layer; padding
q, k, v back for one masked call pays for the padding instead. For batches of `--batch` sequences of
5..T tokens (one of them T long), this times a classification model's forward (inference) and
forward + backward (training) both ways, alternating, and prints the time ratio per T.
`bertkit.model.PER_SEQUENCE_FROM` is where the ratio crosses 1. The padded reference path
(`unpad = False`: no packing at all) is timed beside them, as "padded".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import bertkit.model as model_module
from bertkit.config import BertConfig, preset
from bertkit.model import build_model
from bertkit.training.precision import autocast

WIDTHS = (16, 24, 32, 48, 64, 96, 128)
# route -> (PER_SEQUENCE_FROM that forces it, BertModel.unpad)
ROUTES = {"per-sequence": (0, True), "masked": (10 ** 9, True), "padded": (10 ** 9, False)}


def batch(config: BertConfig, size: int, width: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(5, width + 1, (size,), generator=g)
    lengths[0] = width
    mask = (torch.arange(width)[None] < lengths[:, None]).long()  # (B, T)
    return torch.randint(1, config.vocab_size, mask.shape, generator=g) * mask, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a checkpoint directory whose config.json to use (random weights)")
    parser.add_argument("--preset", default="L-6_H-512", help="when no --model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast")
    args = parser.parse_args()
    config = BertConfig.from_json_file(f"{args.model}/config.json") if args.model else preset(args.preset)
    torch.manual_seed(0)
    model = build_model(config.replace(num_labels=2), "classification")

    def infer(ids, mask):
        with torch.inference_mode(), autocast(args.precision, ids.device):
            model.eval()(ids, None, mask)

    def train(ids, mask):
        with autocast(args.precision, ids.device):
            loss = model.train()(ids, None, mask).logits.float().logsumexp(-1).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    print(f"L={config.num_hidden_layers} H={config.hidden_size}, batch {args.batch}, {args.precision}, "
          f"{torch.get_num_threads()} threads")
    for mode, step in (("infer", infer), ("train", train)):
        for width in WIDTHS:
            g = torch.Generator().manual_seed(width)
            times: dict[str, list[float]] = {route: [] for route in ROUTES}
            for i in range(args.repeats + 2):  # the first two are warm-up
                ids, mask = batch(config, args.batch, width, g)
                for route, (threshold, unpad) in ROUTES.items():
                    model_module.PER_SEQUENCE_FROM, model.bert.unpad = threshold, unpad
                    start = time.perf_counter()
                    step(ids, mask)
                    if i >= 2:
                        times[route].append(time.perf_counter() - start)
            per_seq, masked, padded = (statistics.median(times[r]) for r in ROUTES)
            print(f"{mode} T<={width:3d}: per-sequence {per_seq * 1e3:7.1f} ms, masked {masked * 1e3:7.1f} ms, "
                  f"ratio {per_seq / masked:.2f}; padded {padded * 1e3:7.1f} ms", flush=True)


if __name__ == "__main__":
    from bertkit.allocator import use_fast_allocator

    use_fast_allocator()  # both sides on tcmalloc when installed: see bertkit.allocator
    main()
