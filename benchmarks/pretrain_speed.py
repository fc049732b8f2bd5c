"""Pretraining for a fixed wall-clock budget: `bertkit pretrain` vs transformers' BertForPreTraining
in a plain PyTorch loop, same data, same initial weights, same hyperparameters and precision.

    bertkit data create --input 'SENTENCES/*.txt' --vocab VOCAB --output /tmp/pt128 --dupe-factor 1 --workers 2
    .venv/bin/python benchmarks/pretrain_speed.py --data /tmp/pt128 --preset L-4_H-256 --budget 300

Both runs get the same model (bertkit's initializer, exported to HF format for transformers), batch,
AdamW (no decay on LayerNorm and biases), warmup then linear decay by elapsed time, bf16 autocast,
gradient clipping at 1.0. Then both final models are scored on the same held-out instances
(masked-LM and NSP accuracy), and tokens/s (real tokens) is compared.
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
           "--precision", args.precision, "--seed", "1", "--weight-decay", "0.01", "--log-every", "10",
           "--save-every", "1000000", "--no-progress"]
    subprocess.run(cmd, check=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"steps": rows[-1]["step"], "elapsed": rows[-1]["elapsed"], "tokens_per_s": float(np.median([r["tokens_per_s"] for r in rows[1:] or rows]))}


def hf_loop(args, init_dir: Path, dataset: PretrainingDataset, held_out: int) -> tuple[torch.nn.Module, dict]:
    import transformers

    model = transformers.BertForPreTraining.from_pretrained(init_dir / "hf", attn_implementation="sdpa").train()
    decay = [p for n, p in model.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
    no_decay = [p for n, p in model.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    order = np.arange(len(dataset) - held_out)
    np.random.default_rng(1).shuffle(order)
    start, step, tokens = time.perf_counter(), 0, 0
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
    elapsed = time.perf_counter() - start
    return model.eval(), {"steps": step, "elapsed": elapsed, "tokens_per_s": tokens / elapsed}


@torch.inference_mode()
def score(forward, dataset: PretrainingDataset, held_out: int, batch: int) -> dict:
    """MLM accuracy over real masked slots and NSP accuracy on the last `held_out` instances."""
    hits = total = nsp_hits = 0
    for start in range(len(dataset) - held_out, len(dataset), batch):
        b = as_torch(dataset.get_batch(np.arange(start, min(start + batch, len(dataset)))))
        mlm, nsp = forward(b)  # (B, P, V), (B, 2)
        w = b["masked_lm_weights"] > 0
        hits += int(((mlm.argmax(-1) == b["masked_lm_ids"]) & w).sum())
        total += int(w.sum())
        nsp_hits += int((nsp.argmax(-1) == b["next_sentence_labels"].view(-1)).sum())
    return {"mlm_accuracy": hits / total, "nsp_accuracy": nsp_hits / held_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="L-4_H-256")
    parser.add_argument("--budget", type=float, default=300, help="seconds of training for each side")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--held-out", type=int, default=512)
    args = parser.parse_args()

    dataset = PretrainingDataset(args.data)
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
        theirs, theirs_stats = hf_loop(args, init, dataset, args.held_out)
    ours_score = score(lambda b: (lambda o: (o.mlm_logits, o.nsp_logits))(
        ours(b["input_ids"], b["token_type_ids"], b["attention_mask"], b["masked_lm_positions"])), dataset, args.held_out, 64)
    theirs_score = score(lambda b: (lambda o: (o.prediction_logits.gather(
        1, b["masked_lm_positions"].long()[:, :, None].expand(-1, -1, o.prediction_logits.shape[-1])), o.seq_relationship_logits))(
        theirs(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])),
        dataset, args.held_out, 64)
    print(f"{args.preset}, batch {args.batch}, {args.precision}, budget {args.budget:.0f} s, threads {torch.get_num_threads()}")
    for name, stats, sc in (("bertkit", ours_stats, ours_score), ("transformers", theirs_stats, theirs_score)):
        print(f"{name:12s} steps {stats['steps']:5d}  tokens/s {stats['tokens_per_s']:8,.0f}  "
              f"MLM acc {sc['mlm_accuracy']:.4f}  NSP acc {sc['nsp_accuracy']:.4f}")
    print(f"ratio tokens/s {ours_stats['tokens_per_s'] / theirs_stats['tokens_per_s']:.2f}x, "
          f"steps {ours_stats['steps'] / max(1, theirs_stats['steps']):.2f}x")


if __name__ == "__main__":
    main()
