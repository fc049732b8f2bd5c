"""Mixed precision: bf16 autocast on CPU or GPU, fp16 autocast with dynamic loss scaling on GPU.

Parameters, gradients and optimizer state stay float32; autocast runs the matrix products in the
lower precision. fp16's narrow range needs the loss scaled up before backward and the gradients
unscaled before clipping (``torch.amp.GradScaler``: the scale halves when a step overflows, and the
step is skipped; it doubles after 2000 clean steps). bf16 has float32's range and needs no scaling.

bf16 pays only on hardware with bf16 matrix instructions. A CPU without them (AVX2-only x86, such
as AMD Zen 3) runs oneDNN's bf16 products on a reference path: 0.9 GFLOP/s against 110 in float32
on a 2-core AMD EPYC (Zen 3), so bf16 there is about 100x slower, and bertkit says so once.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from bertkit.errors import BertkitError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger("bertkit.precision")


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run at hardware speed here: always on GPUs; on CPUs, with
    AVX-512 BF16 or AMX (what oneDNN reports). A build that cannot tell is taken to have them."""
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


@functools.cache
def warn_slow_bf16(device_type: str) -> bool:
    """Warn once per process when bf16 is asked for where it has no hardware support."""
    if native_bf16(torch.device(device_type)):
        return False
    log.warning("bf16 on this CPU is about 100x slower than fp32: it has no bf16 matrix instructions "
                "(AVX-512 BF16 or AMX; torch reports CPU capability %s); use --precision fp32",
                torch.backends.cpu.get_cpu_capability())
    return True


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise BertkitError("--precision fp16 needs a GPU (dynamic loss scaling is a CUDA feature); "
                           "use --precision bf16 on CPU")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        warn_slow_bf16(device.type)
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A dynamic loss scaler for fp16, else None."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
