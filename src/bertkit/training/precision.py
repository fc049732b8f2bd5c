"""Mixed precision: bf16 autocast on CPU or GPU, fp16 autocast with dynamic loss scaling on GPU.

Parameters, gradients and optimizer state stay float32; autocast runs the matrix products in the
lower precision. fp16's narrow range needs the loss scaled up before backward and the gradients
unscaled before clipping (``torch.amp.GradScaler``: the scale halves when a step overflows, and the
step is skipped; it doubles after 2000 clean steps). bf16 has float32's range and needs no scaling.
"""

from __future__ import annotations

import contextlib

import torch

from bertkit.errors import BertkitError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise BertkitError("--precision fp16 needs a GPU (dynamic loss scaling is a CUDA feature); "
                           "use --precision bf16 on CPU")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for fp16, else None."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
