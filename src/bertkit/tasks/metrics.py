"""Classification and regression metrics, GLUE's per-task choice of them, and summaries over seeds.

Plain numpy, no scipy or scikit-learn: accuracy, binary F1, Matthews correlation (the multi-class
form, which is the usual one for two classes), Pearson and Spearman (Pearson of average ranks).
Every metric is a float in [0, 1] (correlations in [-1, 1]); a degenerate input (no variance, no
positive predictions) gives 0.0, as scikit-learn does, instead of NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from bertkit.errors import BertkitError

ArrayLike = Sequence[float] | np.ndarray


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(y_true), np.asarray(y_pred)
    if a.shape != b.shape or a.ndim != 1:
        raise BertkitError(f"metrics need two 1-D arrays of one length, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise BertkitError("metrics need at least one example")
    return a, b


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of equal labels."""
    a, b = _pair(y_true, y_pred)
    return float(np.mean(a == b))


def f1_binary(y_true: ArrayLike, y_pred: ArrayLike, positive: int = 1) -> float:
    """F1 of the `positive` class: 2PR / (P + R); 0.0 when there is no true or predicted positive."""
    a, b = _pair(y_true, y_pred)
    tp = np.sum((a == positive) & (b == positive))
    predicted, actual = np.sum(b == positive), np.sum(a == positive)
    if tp == 0 or predicted == 0 or actual == 0:
        return 0.0
    precision, recall = tp / predicted, tp / actual
    return float(2 * precision * recall / (precision + recall))


def matthews_corrcoef(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Matthews correlation (Gorodkin's multi-class form; for two classes the usual phi coefficient)."""
    a, b = _pair(y_true, y_pred)
    classes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.float64)  # (true, pred)
    np.add.at(confusion, (inverse[:a.size], inverse[a.size:]), 1)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, n = np.trace(confusion), confusion.sum()
    cov_tp = correct * n - t @ p
    denominator = math.sqrt((n * n - p @ p) * (n * n - t @ t))
    return 0.0 if denominator == 0 else float(cov_tp / denominator)


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation; 0.0 when either side is constant."""
    a, b = _pair(x, y)
    a, b = a.astype(np.float64) - np.mean(a), b.astype(np.float64) - np.mean(b)
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return 0.0 if denominator == 0 else float(a @ b / denominator)


def rankdata(x: ArrayLike) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (scipy.stats.rankdata's 'average')."""
    values = np.asarray(x, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2  # mean of ranks s+1 .. e
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman correlation: Pearson of the average ranks."""
    a, b = _pair(x, y)
    return pearson(rankdata(a), rankdata(b))


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of logits (N, C) against class ids (N,), in float64 (a dev loss)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


# ----------------------------------------------------------------------------- per task

# GLUE's metrics per task; "score" is GLUE's task score (the mean where a task has two metrics),
# the number to keep the best checkpoint by.
GLUE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "classification": ("accuracy",),  # custom classification
    "regression": ("pearson", "spearman"),  # custom regression
}

_FUNCTIONS = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef,
              "pearson": pearson, "spearman": spearman}


def task_metrics(task: str, y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """GLUE's metrics for `task` (label ids for classification, floats for stsb/regression),
    plus "score": their mean, GLUE's task score. F1 counts label id 1 as the positive class."""
    if task not in GLUE_METRICS:
        raise BertkitError(f"no metrics for task {task!r}; known: {', '.join(GLUE_METRICS)}")
    out = {name: _FUNCTIONS[name](y_true, y_pred) for name in GLUE_METRICS[task]}
    out["score"] = float(np.mean(list(out.values())))
    return out


def summarize_seeds(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float | list[float]]]:
    """Mean, sample standard deviation (ddof=1; 0 for one run), median, min, max and the values of
    every metric found in all runs: {metric: {"mean": ..., "std": ..., ...}}."""
    if not runs:
        raise BertkitError("no runs to summarize")
    names = [k for k in runs[0] if all(k in r for r in runs)]
    out: dict[str, dict[str, float | list[float]]] = {}
    for name in names:
        values = np.array([float(r[name]) for r in runs])
        out[name] = {"mean": float(values.mean()),
                     "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                     "median": float(np.median(values)), "min": float(values.min()),
                     "max": float(values.max()), "values": values.tolist()}
    return out
