"""``bertkit plot RUN_DIR``: training curves from ``RUN_DIR/metrics.jsonl`` as one PNG.

Panels: losses (``loss`` and every ``*_loss``), accuracies (``*_accuracy``), learning rate,
throughput, gradient norm, and any other numeric metric, each against the step. Needs
matplotlib (``pip install 'bertkit[plot]'``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bertkit.errors import BertkitError
from bertkit.io import temp_path_beside
from bertkit.training.monitor import read_metrics

PLOT_FILE = "training_curves.png"
_NOT_PLOTTED = {"step", "elapsed", "sequences_per_s"}


def panels(records: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(title, metric names) for each panel that has data, in display order."""
    names = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))} - _NOT_PLOTTED)
    groups = [
        ("loss", [n for n in names if n == "loss" or n.endswith("_loss")]),
        ("accuracy", [n for n in names if n.endswith("_accuracy")]),
        ("learning rate", [n for n in names if n == "lr"]),
        ("tokens / s", [n for n in names if n == "tokens_per_s"]),
        ("gradient norm (before clipping)", [n for n in names if n == "grad_norm"]),
    ]
    used = {n for _, group in groups for n in group}
    groups.append(("other", [n for n in names if n not in used]))
    return [(title, group) for title, group in groups if group]


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's training curves to ``out`` (default ``RUN/training_curves.png``); returns the path."""
    records = read_metrics(run)
    if not records:
        raise BertkitError(f"{Path(run) / 'metrics.jsonl'}: no logged steps yet")
    plt = _pyplot()
    layout = panels(records)
    rows = math.ceil(len(layout) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.4 * rows), squeeze=False)
    for ax, (title, names) in zip(axes.flat, layout):
        for name in names:
            points = [(r["step"], r[name]) for r in records if _finite(r.get(name))]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(layout):]:
        ax.set_visible(False)
    fig.suptitle(str(Path(run).resolve().name))
    fig.tight_layout()
    return _save(fig, Path(out) if out else Path(run) / PLOT_FILE, plt)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _save(fig, path: Path, plt) -> Path:
    tmp = temp_path_beside(path)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise BertkitError("bertkit plot needs matplotlib: pip install 'bertkit[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
