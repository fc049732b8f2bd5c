"""Google's learning-rate schedule: linear warmup, then linear (power 1 polynomial) decay to 0.

Google's ``optimization.create_optimizer``, with ``step`` the number of updates already made::

    lr = peak · step / warmup           while step < warmup
    lr = peak · (1 - step / max_steps)  after (the decay runs from step 0; warmup only overrides it)

With a wall-clock budget the decay follows time instead: ``1 - elapsed / max_time``. Given both,
the schedule is as far along as the further of the two, so it reaches 0 when the run stops.
"""

from __future__ import annotations

from typing import Any

import torch


class LinearSchedule:
    """Sets every param group's lr from (step, elapsed seconds); stateless, so resuming is exact."""

    def __init__(self, optimizer: torch.optim.Optimizer, peak_lr: float, warmup_steps: int,
                 max_steps: int | None = None, max_time: float | None = None) -> None:
        self.optimizer = optimizer
        self.peak_lr, self.warmup_steps = peak_lr, warmup_steps
        self.max_steps, self.max_time = max_steps, max_time

    def progress(self, step: int, elapsed: float = 0.0) -> float:
        """How far along the decay is, in [0, 1]."""
        done = 0.0
        if self.max_steps:
            done = max(done, step / self.max_steps)
        if self.max_time:
            done = max(done, elapsed / self.max_time)
        return min(done, 1.0)

    def lr(self, step: int, elapsed: float = 0.0) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * step / self.warmup_steps
        return self.peak_lr * (1.0 - self.progress(step, elapsed))

    def apply(self, step: int, elapsed: float = 0.0) -> float:
        """Set the lr for the update that follows ``step`` updates; returns it."""
        lr = self.lr(step, elapsed)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps,
                "max_steps": self.max_steps, "max_time": self.max_time}
