"""Pretraining for a fixed wall-clock budget: `bertkit pretrain` vs transformers' BertForPreTraining
in a plain PyTorch loop, same data, same initial weights, same hyperparameters and precision.

    bertkit data create --input 'TRAIN_SENTENCES/*.txt' --vocab VOCAB --output /tmp/pt128 --dupe-factor 5
    bertkit data create --input HELD_OUT_SENTENCES.txt --vocab VOCAB --output /tmp/pt128-held-out --dupe-factor 1
    .venv/bin/python benchmarks/pretrain_speed.py --data /tmp/pt128 --held-out /tmp/pt128-held-out --budget 3600

Both runs get the same model (bertkit's initializer, exported to HF format for transformers), batch,
AdamW (no decay on LayerNorm and biases), warmup then linear decay by elapsed time, bf16 autocast,
gradient clipping at 1.0. The held-out data must come from documents the training data does not hold.
Printed: the training-batch MLM accuracy against elapsed time for both (every `--log-every` steps,
averaged per tenth of the budget), then both final models scored on the held-out instances (masked-LM and
NSP accuracy), and tokens/s (real tokens).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bertkit import build_model, export_hf, load_model, preset, save_bertkit
from bertkit.data.dataset import PretrainingDataset


def as_torch(batch: dict) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}


def run_bertkit(args, init_dir: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "bertkit", "pretrain", "--data", args.data, "--init", str(init_dir), "--output", str(out), "--batch-size", str(args.batch), "--micro-batch-size", str(args.batch),
           "--learning-rate", str(args.lr), "--warmup-steps", str(args.warmup), "--max-time", str(args.budget),
           "--precision", args.precision, "--seed", "1", "--weight-decay", "0.01",
           "--log-every", str(args.log_every), "--save-every", "1000000", "--no-progress"]
    subprocess.run(cmd, check=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"steps": rows[-1]["step"], "elapsed": rows[-1]["elapsed"],
            "tokens_per_s": float(np.median([r["tokens_per_s"] for r in rows[1:] or rows])),
            "curve": [(r["elapsed"], r["mlm_accuracy"], r["mlm_loss"]) for r in rows]}


def hf_loop(args, init_dir: Path, dataset: PretrainingDataset) -> tuple[torch.nn.Module, dict]:
    import transformers

    model = transformers.BertForPreTraining.from_pretrained(init_dir / "hf", attn_implementation="sdpa").train()
    decay = [p for n, p in model.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
    no_decay = [p for n, p in model.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    order = np.arange(len(dataset))
    np.random.default_rng(1).shuffle(order)
    start, step, tokens, curve = time.perf_counter(), 0, 0, []
    while (elapsed := time.perf_counter() - start) < args.budget:
        frac = min(1.0, elapsed / args.budget)
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (1 - frac)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = np.asarray(order[(step * args.batch) % len(order):][: args.batch])
        b = as_torch(dataset.get_batch(idx))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])
        logits = out.prediction_logits.float()  # (B, T, V): transformers scores every position
        pos = b["masked_lm_positions"].long()
        gathered = logits.gather(1, pos[:, :, None].expand(-1, -1, logits.shape[-1]))
        w = b["masked_lm_weights"].float()
        nll = F.cross_entropy(gathered.flatten(0, 1), b["masked_lm_ids"].flatten(), reduction="none")
        loss = (nll * w.flatten()).sum() / (w.sum() + 1e-5)
        loss = loss + F.cross_entropy(out.seq_relationship_logits.float(), b["next_sentence_labels"].long().view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += int(b["attention_mask"].sum())
        if step % args.log_every == 0:  # as bertkit logs: this step's batch, before the update
            hits = ((gathered.detach().argmax(-1) == b["masked_lm_ids"]).float() * w).sum()
            mlm_loss = (nll.detach() * w.flatten()).sum() / w.sum()
            curve.append((time.perf_counter() - start, float(hits / w.sum()), float(mlm_loss)))
    elapsed = time.perf_counter() - start
    return model.eval(), {"steps": step, "elapsed": elapsed, "tokens_per_s": tokens / elapsed, "curve": curve}


@torch.inference_mode()
def score(forward, dataset: PretrainingDataset, batch: int) -> dict:
    """MLM accuracy over real masked slots and NSP accuracy on every instance of `dataset`."""
    hits = total = nsp_hits = 0
    for start in range(0, len(dataset), batch):
        b = as_torch(dataset.get_batch(np.arange(start, min(start + batch, len(dataset)))))
        mlm, nsp = forward(b)  # (B, P, V), (B, 2)
        w = b["masked_lm_weights"] > 0
        hits += int(((mlm.argmax(-1) == b["masked_lm_ids"]) & w).sum())
        total += int(w.sum())
        nsp_hits += int((nsp.argmax(-1) == b["next_sentence_labels"].view(-1)).sum())
    return {"mlm_accuracy": hits / total, "nsp_accuracy": nsp_hits / len(dataset)}


def by_tenths(curve: list[tuple[float, float, float]], budget: float) -> list[tuple[float, float] | None]:
    """Mean (MLM accuracy, MLM loss) of the logged steps in each tenth of the budget."""
    out = []
    for k in range(10):
        rows = [(a, l) for t, a, l in curve if k * budget / 10 <= t < (k + 1) * budget / 10 or (k == 9 and t >= budget)]
        out.append((float(np.mean([a for a, _ in rows])), float(np.mean([l for _, l in rows]))) if rows else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="L-4_H-256")
    parser.add_argument("--budget", type=float, default=300, help="seconds of training for each side")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--held-out", required=True, help="pretraining data from documents --data does not hold")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    dataset, held_out = PretrainingDataset(args.data), PretrainingDataset(args.held_out)
    torch.manual_seed(0)
    config = preset(args.preset).replace(vocab_size=dataset.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "init"
        model = build_model(config, "pretraining")
        vocab = Path(args.data) / "vocab.txt"
        save_bertkit(model, init, vocab, do_lower_case=True)
        export_hf(model, init / "hf", vocab, do_lower_case=True)
        ours_stats = run_bertkit(args, init, Path(tmp) / "bertkit_run")
        ours = load_model(Path(tmp) / "bertkit_run", head="pretraining")
        theirs, theirs_stats = hf_loop(args, init, dataset)
    ours_score = score(lambda b: (lambda o: (o.mlm_logits, o.nsp_logits))(
        ours(b["input_ids"], b["token_type_ids"], b["attention_mask"], b["masked_lm_positions"])), held_out, 64)
    theirs_score = score(lambda b: (lambda o: (o.prediction_logits.gather(
        1, b["masked_lm_positions"].long()[:, :, None].expand(-1, -1, o.prediction_logits.shape[-1])), o.seq_relationship_logits))(
        theirs(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])),
        held_out, 64)
    print(f"{args.preset}, batch {args.batch}, {args.precision}, budget {args.budget:.0f} s, threads {torch.get_num_threads()}")
    for name, stats, sc in (("bertkit", ours_stats, ours_score), ("transformers", theirs_stats, theirs_score)):
        print(f"{name:12s} steps {stats['steps']:5d}  tokens/s {stats['tokens_per_s']:8,.0f}  "
              f"MLM acc {sc['mlm_accuracy']:.4f}  NSP acc {sc['nsp_accuracy']:.4f}")
    print("training-batch MLM accuracy (loss), mean per tenth of the budget:")
    for k, (a, b) in enumerate(zip(by_tenths(ours_stats["curve"], args.budget), by_tenths(theirs_stats["curve"], args.budget))):
        fmt = lambda x: f"{x[0]:.4f} ({x[1]:.3f})" if x else "-"  # noqa: E731
        print(f"  {k * args.budget / 10:6.0f}-{(k + 1) * args.budget / 10:6.0f} s  bertkit {fmt(a):18s} transformers {fmt(b)}")
    print(f"ratio tokens/s {ours_stats['tokens_per_s'] / theirs_stats['tokens_per_s']:.2f}x, "
          f"steps {ours_stats['steps'] / max(1, theirs_stats['steps']):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "bertkit": {**ours_stats, **ours_score},
                                               "transformers": {**theirs_stats, **theirs_score}}, indent=1))


if __name__ == "__main__":
    from bertkit.allocator import use_fast_allocator

    use_fast_allocator()  # both sides on tcmalloc when installed: see bertkit.allocator
    main()
