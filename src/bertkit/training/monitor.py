"""Seeing a run: a progress bar, ``RUN/metrics.jsonl`` and TensorBoard event files.

Only the main rank writes. ``metrics.jsonl`` has one JSON object per logged step (``step``,
``loss``, each loss term as ``<term>_loss``, the objective's metrics, ``lr``, ``grad_norm``,
``tokens_per_s``, ``sequences_per_s``, ``elapsed``); a resumed run first drops the lines past its
checkpoint, so the file reads as one uninterrupted run. TensorBoard files (``RUN/tensorboard/``)
are written when the ``tensorboard`` package is installed (``pip install 'bertkit[tensorboard]'``).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bertkit.errors import BertkitError
from bertkit.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
log = logging.getLogger("bertkit.training")


class Monitor:
    """Progress bar, metrics.jsonl and TensorBoard for one run; inert on ranks other than the main one."""

    def __init__(self, run: Path, enabled: bool, max_steps: int | None, max_time: float | None,
                 start_step: int = 0, progress: bool = True) -> None:
        self.enabled = enabled
        self.by_time = max_steps is None
        self.bar = None
        self.metrics = self.tensorboard = None
        if not enabled:
            return
        run.mkdir(parents=True, exist_ok=True)
        self.metrics = open(run / METRICS_FILE, "a", encoding="utf-8")
        self.tensorboard = _summary_writer(run / TENSORBOARD_DIR)
        total = math.ceil(max_time) if self.by_time else max_steps
        by_time = "{l_bar}{bar}| {n}/{total} s of the budget [{elapsed}<{remaining}{postfix}]"
        self.bar = tqdm(total=total, initial=0 if self.by_time else start_step, unit="s" if self.by_time else "step",
                        bar_format=by_time if self.by_time else None, disable=None if progress else True,
                        file=sys.stderr, dynamic_ncols=True)

    def step(self, step: int, elapsed: float, loss: float, tokens_per_s: float | None) -> None:
        """Advance the bar after ``step`` updates (``elapsed`` seconds into the budget)."""
        if self.bar is None:
            return
        self.bar.update(int(elapsed) - self.bar.n if self.by_time else step - self.bar.n)
        postfix = {"loss": f"{loss:.4f}"}
        if self.by_time:
            postfix["step"] = step
        if tokens_per_s:
            postfix["tok/s"] = f"{tokens_per_s:,.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def log(self, record: dict[str, Any], group: str = "train") -> None:
        """Write one logged step: a metrics.jsonl line and TensorBoard scalars under ``group/``."""
        if not self.enabled:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.tensorboard is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{group}/{name}", value, record["step"])
            self.tensorboard.flush()

    def warn(self, message: str) -> None:
        if self.enabled:
            log.warning(message)

    def close(self) -> None:
        for thing in (self.bar, self.metrics, self.tensorboard):
            if thing is not None:
                thing.close()
        self.bar = self.metrics = self.tensorboard = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summary_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(directory))


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The records of ``RUN/metrics.jsonl`` (a missing file is a BertkitError)."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        raise BertkitError(f"{path}: no such file (is {run} a training run directory?)")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # only a last line cut short by a killed run is ignored
                raise BertkitError(f"{path}:{number}: not a JSON line") from None
    return records


def truncate_metrics(run: str | Path, step: int) -> None:
    """Drop metrics.jsonl lines past ``step`` (a resumed run logs those steps again)."""
    path = Path(run) / METRICS_FILE
    if path.is_file():
        kept = [r for r in read_metrics(run) if r.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
