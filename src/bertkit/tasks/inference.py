"""Running a model over many encoded examples: length-sorted batches, each cut to its longest.

Shared by fine-tuning's evaluation, ``bertkit predict`` and the test-set predictions: examples
are sorted by length (longest first, so a memory problem shows on the first batch), each batch
is trimmed to its longest real sequence, and the outputs come back in the input's order.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from bertkit.training.precision import autocast

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def trim_padding(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Cut every (B, T, ...) feature of a padded batch to the batch's longest real sequence.

    A feature is token-level when its second dimension equals the attention mask's T; everything
    else (labels (B,), positions) is kept as is. Padding is at the end of each row.
    """
    mask = batch["attention_mask"]
    width = mask.shape[1]
    longest = int(mask.sum(1).max()) if mask.numel() else width
    if longest == width:
        return dict(batch)
    return {k: v[:, :longest] if v.dim() >= 2 and v.shape[1] == width else v for k, v in batch.items()}


def run_model(model: nn.Module, features: Mapping[str, np.ndarray], outputs: Sequence[str], *,
              batch_size: int = 64, precision: str = "fp32", device: torch.device | str | None = None,
              progress: bool = False, desc: str = "predicting") -> dict[str, np.ndarray]:
    """The model's ``outputs`` (BertOutput field names) for every example, as float32 arrays.

    features: input_ids, token_type_ids, attention_mask, each (N, T) and padded at the end.
    Sequence-level outputs come back as (N, ...); token-level ones as (N, T, ...) with zeros past
    each example's length. The model is run in eval mode under inference_mode (and autocast for
    bf16/fp16); its training mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    mask = np.asarray(features["attention_mask"])
    n, width = mask.shape
    order = np.argsort(-mask.sum(1), kind="stable")  # longest first
    results: dict[str, np.ndarray] = {}
    was_training = model.training
    model.eval()
    bar = tqdm(total=n, desc=desc, unit="ex", disable=None if progress else True, file=sys.stderr)
    try:
        with torch.inference_mode(), autocast(precision, device) if precision != "fp32" else contextlib.nullcontext():
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                batch = trim_padding({k: torch.from_numpy(np.ascontiguousarray(features[k][rows])).to(device)
                                      for k in MODEL_INPUTS if k in features})
                out = model(**batch)
                for name in outputs:
                    _store(results, name, getattr(out, name), rows, n, width)
                bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)
    return results


def _store(results: dict[str, np.ndarray], name: str, value: Tensor | None, rows: np.ndarray, n: int,
           width: int) -> None:
    """Put one batch's ``value`` (B, ...) or (B, t, ...) at ``rows`` of the (N, ...) / (N, T, ...) result."""
    if value is None:
        raise ValueError(f"the model computes no {name!r}")
    array = value.float().cpu().numpy()
    if name not in results:
        shape = (n, width, *array.shape[2:]) if _token_level(name, array) else (n, *array.shape[1:])
        results[name] = np.zeros(shape, dtype=np.float32)
    if _token_level(name, array):
        results[name][rows, : array.shape[1]] = array  # the batch was cut to t <= T tokens
    else:
        results[name][rows] = array


def _token_level(name: str, array: np.ndarray) -> bool:
    """Per-token outputs: hidden states, QA logits, token-classification logits (B, t, C)."""
    return name in ("last_hidden_state", "start_logits", "end_logits") or (name == "logits" and array.ndim == 3)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
