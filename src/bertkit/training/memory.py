"""Out of GPU memory: find the largest micro-batch that fits and say how to keep the global batch.

When a step runs out of memory the loop probes smaller micro-batches (forward and backward only,
no update) by binary search over the sizes that divide a rank's share of the global batch, then
stops with a message naming the largest that fits and the gradient accumulation that keeps the
global batch. The search and the message are plain functions; tests drive the whole path on CPU
with a simulated out-of-memory error.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence

import torch


def micro_batch_candidates(per_rank: int, below: int) -> list[int]:
    """Micro-batch sizes under ``below`` that divide a rank's share of the global batch, ascending."""
    return [m for m in range(1, min(below, per_rank + 1)) if per_rank % m == 0]


def largest_fitting(candidates: Sequence[int], fits: Callable[[int], bool]) -> int | None:
    """The largest candidate for which ``fits`` is true, by binary search (``fits`` must be monotone)."""
    lo, hi, best = 0, len(candidates) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(candidates[mid]):
            best, lo = candidates[mid], mid + 1
        else:
            hi = mid - 1
    return best


def oom_advice(micro: int, best: int | None, batch_size: int, world_size: int) -> str:
    """The message for an out-of-memory stop."""
    per_rank = batch_size // world_size
    head = (f"out of GPU memory with --micro-batch-size {micro} "
            f"(global batch {batch_size} = {micro} × {per_rank // micro} accumulation steps × {world_size} processes)")
    if best is None:
        return (f"{head}; not even a micro-batch of 1 fits: try --grad-checkpointing, --precision bf16, "
                "--sharding fsdp under torchrun, or a smaller model or --max-seq-length")
    return (f"{head}. The largest micro-batch that fits is {best}: use --micro-batch-size {best} "
            f"(gradient accumulation {per_rank // best} keeps the global batch of {batch_size})")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
