"""How fast a BERT runs here, and against transformers on identical weights: tokens/s, FLOP rate, memory.

The one measurement behind ``bertkit benchmark`` and ``benchmarks/speed_suite.py``:

* workloads (``LENGTHS``): ``fixed``, every sequence 128 real tokens; ``var``, lengths uniform in
  20..128, each batch padded to its longest (as transformers users pad); ``squad``, 384, full;
  ``short``, lengths uniform in 5..32, padded per batch: single sentences as in CoLA and SST-2
  (median 10 and 13 word pieces); ``data``, real pretraining batches read from ``BenchSpec.data``
  (``bertkit data create``'s output or Google's TFRecords), each cut to its longest instance: the
  lengths, pairs and masks that pretraining feeds;
* ``infer``: the bare encoder (BertModel) under ``inference_mode``. ``train``: BertForPreTraining,
  masked LM at 15% of each sequence's positions plus next sentence, forward + backward + AdamW step.
  bertkit runs its MLM head at the masked positions only (``masked_lm_positions``, through the
  PretrainingObjective ``bertkit pretrain`` uses); transformers scores every position, with labels
  -100 elsewhere, as its users do;
* precisions: ``fp32``; ``bf16``, autocast over float32 weights; ``bf16-weights``, inference with the
  weights cast to bfloat16;
* both implementations hold the same weights (bertkit's, written out by bertkit's own HF exporter)
  and must agree on the real tokens (``check_agreement``) before anything is timed. They are timed
  interleaved (A B A B ...) on the same batches after warm-up; rates are medians over batches, the
  speed-up is the median of the per-batch time ratios;
* FLOP rate: the encoder's real-token FLOPs (``encoder_flops``) per second, as a fraction (MFU) of
  the best rate of a BERT-shaped matrix product in the run (``matmul_peak``, measured beside each
  configuration; the best per dtype is the peak);
* memory: each implementation runs again in a process of its own (``python -m bertkit.benchmark``),
  so neither sees the other's tensors: one warm-up step (lazy initialisation, optimizer state), then
  one measured step. Peak is the RSS high-water mark on CPU (the kernel's, reset before the measured
  step, once the warm-up's freed heap is given back) and ``max_memory_allocated`` on CUDA; "step"
  memory is that peak minus what was in use just before the step: activations, gradients, temporaries.
"""

from __future__ import annotations

import copy
import glob
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bertkit.allocator import active_allocator
from bertkit.config import BertConfig, preset
from bertkit.convert.checkpoint import export_hf, save_bertkit
from bertkit.convert.load import load_model
from bertkit.data.dataset import PretrainingDataset
from bertkit.errors import BertkitError
from bertkit.model import build_model, compile_for_inference
from bertkit.process_memory import memory_now, memory_peak, reset_peak
from bertkit.tasks.inference import trim_padding
from bertkit.training.objective import PretrainingObjective, normalize
from bertkit.training.optim import fusable, param_groups
from bertkit.training.precision import native_bf16, warn_slow_bf16

LENGTHS = {"fixed": (128, 128), "var": (20, 128), "squad": (384, 384), "short": (5, 32)}  # (shortest, longest) real length
WORKLOADS = (*LENGTHS, "data")  # "data": batches from a pretraining data file, lengths as they come
MODES = ("infer", "train")
PRECISIONS = ("fp32", "bf16", "bf16-weights")
MASKED_LM_PROB = 0.15  # share of each sequence's tokens the MLM head predicts
PEAK_SHAPE = (4096, 768, 3072)  # (M, K, N): BERT-base's FFN matrix product on 4096 tokens
# Largest relative output difference allowed: weights that differ give about 1; bf16 rounding gives
# up to 2e-2 on BERT-base when one side skips the padding.
TOLERANCE = {"fp32": 1e-4, "bf16": 0.1, "bf16-weights": 0.1}
DEFAULTS = {"cpu": {"batch_size": 8, "repeats": 3, "warmup": 1}, "cuda": {"batch_size": 32, "repeats": 10, "warmup": 3}}


@dataclass(frozen=True)
class BenchSpec:
    """One measured configuration."""

    mode: str = "infer"  # "infer" (encoder forward) or "train" (pretraining step)
    lengths: str = "fixed"  # one of WORKLOADS
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "bf16-weights" (inference only)
    batch_size: int = 8  # sequences per batch
    repeats: int = 3  # timed batches per implementation
    warmup: int = 1  # untimed batches per implementation before those
    seed: int = 0  # a batch is a function of (seed, its index)
    # bertkit compiled: infer, the encoder with frozen weights (compile_for_inference, as predict
    # --compile); train, the whole model under torch.compile (as pretrain --compile)
    compile: bool = False
    data: str | None = None  # pretraining data (a bertkit data directory or TFRecords) for lengths "data"

    def __post_init__(self) -> None:
        for name, known in (("mode", MODES), ("lengths", WORKLOADS), ("precision", PRECISIONS)):
            if getattr(self, name) not in known:
                raise BertkitError(f"unknown {name} {getattr(self, name)!r} (known: {', '.join(known)})")
        if (self.lengths == "data") != (self.data is not None):
            raise BertkitError("--lengths data reads its batches from --data PATH, and --data needs --lengths data")
        if self.mode == "train" and self.precision == "bf16-weights":
            raise BertkitError("precision bf16-weights is for inference; train with bf16 (autocast)")
        for name, least in (("batch_size", 1), ("repeats", 1), ("warmup", 0)):
            if getattr(self, name) < least:
                raise BertkitError(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(self, name)}")

    @property
    def head(self) -> str | None:
        return "pretraining" if self.mode == "train" else None


def make_spec(device: str, **options: Any) -> BenchSpec:
    """A BenchSpec whose unset (None) batch size, repeats and warm-up take ``device``'s defaults."""
    chosen = {k: v for k, v in options.items() if v is not None}
    return BenchSpec(**{**DEFAULTS[resolve_device(device).type], **chosen})


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BertkitError(f"unknown device {name!r} (use cpu or cuda)") from None
    if device.type not in DEFAULTS:
        raise BertkitError(f"unknown device {name!r} (use cpu or cuda)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BertkitError(f"--device {name}: no CUDA device visible to torch {torch.__version__}")
    return device


# --- batches ----------------------------------------------------------------------------------


def make_batch(spec: BenchSpec, vocab_size: int, index: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Random tokens for batch ``index`` of ``spec``; the same for both implementations.

    input_ids, token_type_ids, attention_mask: (B, T), T the batch's longest length, pad id 0, the
    second half of each sequence segment B. For training also masked_lm_positions, masked_lm_ids,
    masked_lm_weights (B, P), P = ceil(15% of the workload's longest length) slots of which
    round(15% of the sequence's length) are real; next_sentence_labels (B,); and mlm_labels (B, T),
    the masked tokens' ids and -100 elsewhere: transformers' labels for the same prediction.
    """
    if spec.data is not None:
        return {k: v.to(device) for k, v in _data_batch(spec, index).items()}
    g = torch.Generator().manual_seed(spec.seed * 1_000_003 + index)
    shortest, longest = LENGTHS[spec.lengths]
    lengths = torch.randint(shortest, longest + 1, (spec.batch_size,), generator=g)  # (B,)
    pos = torch.arange(int(lengths.max()))
    mask = (pos[None, :] < lengths[:, None]).long()  # (B, T)
    batch = {"input_ids": torch.randint(1, vocab_size, mask.shape, generator=g) * mask,
             "token_type_ids": ((pos[None, :] >= lengths[:, None] // 2) & mask.bool()).long(),
             "attention_mask": mask}
    if spec.mode == "train":
        batch.update(_masked_lm(batch["input_ids"], lengths, longest, g))
    return {k: v.to(device) for k, v in batch.items()}


def _masked_lm(ids: Tensor, lengths: Tensor, longest: int, g: torch.Generator) -> dict[str, Tensor]:
    slots = math.ceil(MASKED_LM_PROB * longest)
    positions = torch.zeros(len(ids), slots, dtype=torch.long)
    weights = torch.zeros(len(ids), slots)
    labels = torch.full_like(ids, -100)
    for row, n in enumerate(lengths.tolist()):
        k = min(slots, max(1, round(MASKED_LM_PROB * n)))
        chosen = (1 + torch.randperm(n - 2, generator=g)[:k]).sort().values  # never [CLS] or the last [SEP]
        positions[row, :k], weights[row, :k] = chosen, 1.0
        labels[row, chosen] = ids[row, chosen]
    return {"masked_lm_positions": positions, "masked_lm_ids": ids.gather(1, positions) * (weights > 0),
            "masked_lm_weights": weights, "mlm_labels": labels,
            "next_sentence_labels": torch.randint(0, 2, (len(ids),), generator=g)}


def open_data(path: str) -> PretrainingDataset:
    """The pretraining data at ``path``, opened once per process (TFRecords are indexed when opened)."""
    if path not in _OPENED:
        if not Path(path).exists() and not glob.glob(path):
            raise BertkitError(f"--data {path}: no such pretraining data")
        _OPENED[path] = PretrainingDataset(path)
    return _OPENED[path]


_OPENED: dict[str, PretrainingDataset] = {}


def _data_batch(spec: BenchSpec, index: int) -> dict[str, Tensor]:
    """Batch ``index`` of the data's shuffled order for ``spec.seed`` (wrapping around), cut to
    its longest instance (as a collator padding per batch does), with transformers' ``mlm_labels``."""
    data = open_data(spec.data)
    if len(data) < spec.batch_size:
        raise BertkitError(f"--data {spec.data}: {len(data)} instances, fewer than a batch of {spec.batch_size}")
    positions = np.arange(index * spec.batch_size, (index + 1) * spec.batch_size) % len(data)
    instances = data.get_batch(data.permutation(spec.seed)(positions))
    batch = trim_padding({k: torch.from_numpy(v) for k, v in instances.items()})  # (B, T), T the longest
    if spec.mode == "infer":
        return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    real = batch["masked_lm_weights"] > 0  # (B, P)
    labels = torch.full_like(batch["input_ids"], -100)
    rows = torch.arange(len(labels))[:, None].expand_as(real)
    labels[rows[real], batch["masked_lm_positions"][real]] = batch["masked_lm_ids"][real]
    return {**batch, "mlm_labels": labels}


# --- FLOPs --------------------------------------------------------------------------------------


def encoder_flops(config: BertConfig, lengths: Sequence[int], training: bool = False) -> int:
    """FLOPs the encoder needs for sequences of these real lengths (padding does no useful work).

    Per real token of a sequence of n tokens, per layer: 2·(4H² + 2HI) for the products with
    weight matrices (query, key, value, attention output, FFN in, FFN out; 2 FLOPs a multiply-add),
    plus 4·n·H for attention over the sequence's own n keys (QKᵀ and probabilities·V, 2nH each).
    Training is 3× the forward (the backward pass computes two products for each one forward).
    Not counted: embeddings, LayerNorm, softmax, GELU, the pooler and every head.
    """
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    weights = 2 * (4 * h * h + 2 * h * i)
    forward = sum(layers * n * (weights + 4 * n * h) for n in lengths)
    return 3 * forward if training else forward


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 5,
                shape: tuple[int, int, int] = PEAK_SHAPE) -> float:
    """The best FLOP/s of an (M×K)·(K×N) matrix product in ``dtype`` over ``repeats`` runs after one warm-up."""
    m, k, n = shape
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    seconds = min(timed(lambda: a @ b, device) for _ in range(repeats + 1))
    return 2 * m * k * n / seconds


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, waiting for queued GPU work before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


# --- models -------------------------------------------------------------------------------------


def load_bench_model(model: str, head: str | None, seed: int = 0) -> nn.Module:
    """``model``: a checkpoint directory (any format load_model reads) or a preset name (random weights).

    A pretraining head the checkpoint lacks is created at random: speed does not depend on it.
    """
    if Path(model).exists():
        return load_model(model, head, init_head=head is not None)
    try:
        config = preset(model)
    except BertkitError:
        raise BertkitError(f"{model}: no such checkpoint directory, and not a preset name "
                           "(base, large, tiny, mini, small, medium, L-4_H-256, ...)") from None
    torch.manual_seed(seed)
    return build_model(config, head).eval()


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise BertkitError("--against transformers needs the transformers package (pip install transformers)") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def transformers_twin(model: nn.Module, directory: str | Path) -> nn.Module:
    """transformers' model holding ``model``'s weights: written by bertkit's ``export_hf`` into
    ``directory`` and read back with ``from_pretrained``."""
    export_hf(model, directory)
    return load_transformers(directory, getattr(model, "head", None))


def load_transformers(directory: str | Path, head: str | None) -> nn.Module:
    """transformers' BertModel, or BertForPreTraining for the pretraining head, with sdpa attention."""
    transformers = require_transformers()
    cls = transformers.BertForPreTraining if head == "pretraining" else transformers.BertModel
    return cls.from_pretrained(directory, attn_implementation="sdpa").eval()


def _load_saved(impl: str, directory: Path, head: str | None) -> nn.Module:
    return load_model(directory, head) if impl == "bertkit" else load_transformers(directory, head)


def prepare(impl: str, model: nn.Module, spec: BenchSpec, device: torch.device) -> nn.Module:
    """The module to time: a fresh copy for training (the steps change it), for bfloat16 weights
    and for bertkit compiled (which freezes the weights it holds into the compiled code)."""
    compiled = spec.compile and impl == "bertkit"
    if spec.mode == "train" or spec.precision == "bf16-weights" or compiled:
        model = copy.deepcopy(model)
    model = model.to(device=device, dtype=torch.bfloat16 if spec.precision == "bf16-weights" else None)
    if not compiled:
        return model
    if spec.mode == "infer":
        return compile_for_inference(model)
    # What pretrain --compile runs. Where batch lengths vary, every shape shares one compilation
    # (dynamic), so that no recompilation falls in the timed batches.
    varied = spec.lengths == "data" or LENGTHS[spec.lengths][0] != LENGTHS[spec.lengths][1]
    return torch.compile(model, dynamic=True if varied else None)


def _autocast(spec: BenchSpec, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if spec.precision == "bf16" else nullcontext()


# --- outputs and the identical-weights check ----------------------------------------------------


def outputs(impl: str, model: nn.Module, batch: dict[str, Tensor]) -> list[Tensor]:
    """What the check compares, on real tokens only: encoder output (N_real, H) and pooled (B, H);
    for pretraining models MLM logits at the real masked slots (N_masked, V) and NSP logits (B, 2)."""
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if "masked_lm_positions" not in batch:
        out = model(**inputs)
        pooled = out.pooled_output if impl == "bertkit" else out.pooler_output
        return [out.last_hidden_state[batch["attention_mask"].bool()], pooled]
    positions, real = batch["masked_lm_positions"], batch["masked_lm_weights"] > 0
    if impl == "bertkit":
        out = model(**inputs, masked_lm_positions=positions)
        return [out.mlm_logits[real], out.nsp_logits]
    out = model(**inputs)
    logits = out.prediction_logits  # (B, T, V)
    at = logits.gather(1, positions[:, :, None].expand(-1, -1, logits.shape[-1]))  # (B, P, V)
    return [at[real], out.seq_relationship_logits]


def relative_difference(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b|."""
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def check_agreement(ours: nn.Module, theirs: nn.Module, batch: dict[str, Tensor], spec: BenchSpec) -> float:
    """The largest relative difference between the two models' outputs on ``batch``'s real tokens.

    Raises BertkitError above TOLERANCE[spec.precision]: then the two do not hold the same weights
    or do not compute the same function, and timing them against each other would mean nothing.
    """
    device = batch["input_ids"].device
    with torch.inference_mode(), _autocast(spec, device):
        pairs = zip(outputs("bertkit", ours, batch), outputs("transformers", theirs, batch))
        worst = max(relative_difference(a, b) for a, b in pairs)
    limit = TOLERANCE[spec.precision]
    if not worst <= limit:
        raise BertkitError(f"bertkit and transformers disagree on real tokens (largest relative difference "
                           f"{worst:.2e}, tolerance {limit:.0e} at {spec.precision}): not the same weights")
    return worst


# --- the measured work --------------------------------------------------------------------------


def make_step(impl: str, model: nn.Module, spec: BenchSpec, device: torch.device) -> Callable[[dict], None]:
    """One unit of measured work on a batch: a forward pass (infer) or a training step (train)."""
    if spec.mode == "infer":
        def forward(batch: dict[str, Tensor]) -> None:
            with torch.inference_mode(), _autocast(spec, device):
                model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                      attention_mask=batch["attention_mask"])
        return forward
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-4, fused=fusable(model))  # both sides: Trainer's default
    loss_of = _bertkit_loss if impl == "bertkit" else _transformers_loss

    def train_step(batch: dict[str, Tensor]) -> None:
        with _autocast(spec, device):
            loss = loss_of(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return train_step


_OBJECTIVE = PretrainingObjective()


def _bertkit_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """What ``bertkit pretrain`` optimizes: MLM at the masked positions (weighted) + NSP."""
    terms = _OBJECTIVE(model, batch)
    return normalize(terms.losses, _OBJECTIVE.weights(batch), _OBJECTIVE.eps)


def _transformers_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"], labels=batch["mlm_labels"],
                next_sentence_label=batch["next_sentence_labels"])
    return out.loss


def time_interleaved(steps: dict[str, Callable[[dict], None]], batches: Sequence[dict], warmup: int,
                     device: torch.device) -> dict[str, list[float]]:
    """Seconds of each step on each batch after the first ``warmup``, implementations alternating per batch."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for index, batch in enumerate(batches):
        for name, step in steps.items():
            seconds = timed(lambda: step(batch), device)
            if index >= warmup:
                times[name].append(seconds)
    return times


def rates(times: Sequence[float], tokens: Sequence[int], flops: Sequence[int]) -> dict[str, float]:
    """Medians over batches: real tokens/s, ms per batch, real-token FLOP/s."""
    return {"tokens_per_s": statistics.median(n / t for n, t in zip(tokens, times)),
            "ms_per_batch": 1000 * statistics.median(times),
            "flops_per_s": statistics.median(f / t for f, t in zip(flops, times))}


# --- memory, in a process per implementation ----------------------------------------------------


def measure_memory(impl: str, directory: Path, spec: BenchSpec, device: torch.device) -> dict[str, Any]:
    """Peak and step memory (MB) of a step of ``impl`` loaded from ``directory``, in a child process."""
    request = {"impl": impl, "directory": str(directory), "spec": asdict(spec), "device": str(device),
               "threads": torch.get_num_threads()}
    done = subprocess.run([sys.executable, "-m", "bertkit.benchmark", json.dumps(request)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_memory_mb": None, "step_memory_mb": None, "memory_error": last}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_child(request: dict[str, Any]) -> dict[str, float | None]:
    torch.set_num_threads(request["threads"])
    spec, device = BenchSpec(**request["spec"]), torch.device(request["device"])
    model = prepare(request["impl"], _load_saved(request["impl"], Path(request["directory"]), spec.head), spec, device)
    batch = make_batch(spec, model.config.vocab_size, 0, device)
    step = make_step(request["impl"], model, spec, device)
    step(batch)  # warm-up: lazy initialisation, the optimizer's state
    reset_peak(device)
    before = memory_now(device)
    step(batch)
    peak = memory_peak(device)
    return {"peak_memory_mb": peak, "step_memory_mb": None if before is None else max(0.0, peak - before)}


# --- a whole run --------------------------------------------------------------------------------


def run_benchmark(model: str, specs: Sequence[BenchSpec], *, against: str | None = None, device: str = "cpu",
                  threads: int | None = None, memory: bool = True) -> dict[str, Any]:
    """Measure every spec on ``model`` (a checkpoint directory or a preset name); one JSON-ready report.

    against: None (bertkit alone) or "transformers". memory: also measure peak memory (child processes).
    """
    if not specs:
        raise BertkitError("nothing to measure (training has no bf16-weights precision)")
    dev = resolve_device(device)
    if against not in (None, "transformers"):
        raise BertkitError(f"--against: unknown implementation {against!r} (known: transformers)")
    if against:
        require_transformers()
    if threads is not None:
        if threads < 1:
            raise BertkitError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if any(spec.precision != "fp32" for spec in specs):
        warn_slow_bf16(dev.type)
    report = _environment(model, dev, against)
    for head in dict.fromkeys(spec.head for spec in specs):  # one model load per head, in first-use order
        group = [spec for spec in specs if spec.head == head]
        report["config"], results = _run_head(model, head, group, dev, against, memory)
        report["results"] += results
    _add_mfu(report)
    return report


def _run_head(model: str, head: str | None, specs: list[BenchSpec], device: torch.device, against: str | None,
              memory: bool) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The model's summary and the results of ``specs``, which all use ``head``."""
    ours = load_bench_model(model, head).to(device)
    _check_lengths(ours.config, specs)
    with tempfile.TemporaryDirectory(prefix="bertkit-bench-") as tmp:
        models = {"bertkit": ours}
        if against:
            models["transformers"] = transformers_twin(ours, Path(tmp) / "transformers").to(device)
        if memory:
            save_bertkit(ours, Path(tmp) / "bertkit")
        results = []
        for spec in specs:
            result = run_spec(spec, models, device, Path(tmp) if memory else None)
            dtype = torch.float32 if _peak_key(spec.precision) == "fp32" else torch.bfloat16
            result["matmul_flops_per_s"] = matmul_peak(dtype, device)
            results.append(result)
    return _config_summary(ours.config), results


def _peak_key(precision: str) -> str:
    return "fp32" if precision == "fp32" else "bf16"


def _add_mfu(report: dict[str, Any]) -> None:
    """The matmul peak of each dtype is the best of the run (one measured beside every configuration,
    so that a moment of load on a shared machine does not set it); MFU is a rate's share of it."""
    peaks: dict[str, float] = {}
    for result in report["results"]:
        key = _peak_key(result["precision"])
        peaks[key] = max(peaks.get(key, 0.0), result["matmul_flops_per_s"])
    for result in report["results"]:
        for row in result["implementations"].values():
            row["mfu"] = row["flops_per_s"] / peaks[_peak_key(result["precision"])]
    report["matmul_peak_flops_per_s"] = peaks


def run_spec(spec: BenchSpec, models: dict[str, nn.Module], device: torch.device,
             saved: Path | None = None) -> dict[str, Any]:
    """Check agreement, time the implementations interleaved, and (with ``saved``) measure memory."""
    config = models["bertkit"].config
    models = {name: prepare(name, m, spec, device) for name, m in models.items()}
    batches = [make_batch(spec, config.vocab_size, i, device) for i in range(spec.warmup + spec.repeats)]
    difference = check_agreement(models["bertkit"], models["transformers"], batches[0], spec) \
        if "transformers" in models else None
    steps = {name: make_step(name, m, spec, device) for name, m in models.items()}
    times = time_interleaved(steps, batches, spec.warmup, device)
    lengths = [b["attention_mask"].sum(1).tolist() for b in batches[spec.warmup:]]
    tokens = [sum(n) for n in lengths]
    flops = [encoder_flops(config, n, spec.mode == "train") for n in lengths]
    rows = {name: rates(times[name], tokens, flops) for name in models}
    for name in rows if saved is not None else ():
        rows[name].update(measure_memory(name, saved / name, spec, device))
    padded = sum(b["attention_mask"].numel() for b in batches[spec.warmup:])
    speedup = (statistics.median(t / o for t, o in zip(times["transformers"], times["bertkit"]))
               if "transformers" in rows else None)
    return {**asdict(spec), "real_tokens_per_batch": statistics.mean(tokens), "padding": 1 - sum(tokens) / padded,
            "max_relative_difference": difference, "speedup": speedup, "implementations": rows}


def _check_lengths(config: BertConfig, specs: Sequence[BenchSpec]) -> None:
    """Refuse workloads longer than the model's positions and data outside its vocabulary."""
    for spec in specs:
        data = None if spec.data is None else open_data(spec.data)
        longest = LENGTHS[spec.lengths][1] if data is None else data.max_seq_length
        if longest > config.max_position_embeddings:
            raise BertkitError(f"the model takes at most {config.max_position_embeddings} positions; "
                               f"the workload needs {longest}")
        if data is not None:
            try:
                data.check_vocab(config.vocab_size)
            except BertkitError as err:
                raise BertkitError(f"--data {spec.data}: {err}") from None


def _config_summary(config: BertConfig) -> dict[str, int]:
    return {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "heads": config.num_attention_heads, "intermediate": config.intermediate_size,
            "vocab": config.vocab_size}


def _environment(model: str, device: torch.device, against: str | None) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    if device.type == "cpu":  # the kernels torch picks, and whether bf16 has hardware behind it
        name += f", {torch.backends.cpu.get_cpu_capability()}" + ("" if native_bf16(device) else ", no native bf16")
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    if against:
        versions["transformers"] = require_transformers().__version__
    return {"model": model, "config": None, "device": str(device), "device_name": name,
            "threads": torch.get_num_threads(), "allocator": active_allocator(), "versions": versions,
            "results": []}


def cpu_name() -> str:
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        found = None
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


if __name__ == "__main__":  # the memory child: python -m bertkit.benchmark REQUEST_JSON
    print(json.dumps(_memory_child(json.loads(sys.argv[1]))))
