"""Classification and regression metrics: hand-computed values, scipy/scikit-learn where installed."""

from __future__ import annotations

import numpy as np
import pytest

from bertkit.errors import BertkitError
from bertkit.tasks.metrics import (accuracy, f1_binary, matthews_corrcoef, pearson, rankdata, spearman,
                                   summarize_seeds, task_metrics)


def test_hand_computed():
    y, p = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]  # tp 2, fn 1, fp 1, tn 1
    assert accuracy(y, p) == pytest.approx(3 / 5)
    assert f1_binary(y, p) == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert matthews_corrcoef(y, p) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)
    assert rankdata([10, 20, 10, 30]).tolist() == [1.5, 3.0, 1.5, 4.0]
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_degenerate_inputs_are_zero_not_nan():
    assert matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0
    assert f1_binary([0, 0], [0, 0]) == 0.0
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0
    with pytest.raises(BertkitError, match="one length"):
        accuracy([1, 2], [1])
    with pytest.raises(BertkitError, match="at least one"):
        accuracy([], [])


def test_against_scipy_and_sklearn():
    stats = pytest.importorskip("scipy.stats")
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=200), rng.integers(0, 5, 200).astype(float)  # y has many ties
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    a, b = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    assert matthews_corrcoef(a, b) == pytest.approx(skm.matthews_corrcoef(a, b), abs=1e-12)
    assert f1_binary(a, b) == pytest.approx(skm.f1_score(a, b), abs=1e-12)
    c, d = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert matthews_corrcoef(c, d) == pytest.approx(skm.matthews_corrcoef(c, d), abs=1e-12)


def test_task_metrics_follow_glue():
    assert set(task_metrics("cola", [1, 0, 1], [1, 0, 0])) == {"mcc", "score"}
    mrpc = task_metrics("mrpc", [1, 0, 1, 1], [1, 0, 0, 1])
    assert mrpc["accuracy"] == 0.75 and mrpc["f1"] == pytest.approx(0.8)
    assert mrpc["score"] == pytest.approx((0.75 + 0.8) / 2)
    stsb = task_metrics("stsb", [0.0, 2.5, 5.0], [0.5, 2.0, 4.0])
    assert set(stsb) == {"pearson", "spearman", "score"} and stsb["spearman"] == pytest.approx(1.0)
    with pytest.raises(BertkitError, match="no metrics for task"):
        task_metrics("squad", [1], [1])


def test_summarize_seeds():
    runs = [{"accuracy": 0.8, "f1": 0.5}, {"accuracy": 0.9, "f1": 0.7}, {"accuracy": 0.7}]
    summary = summarize_seeds(runs)
    assert list(summary) == ["accuracy"]  # f1 is not in every run
    acc = summary["accuracy"]
    assert acc["mean"] == pytest.approx(0.8) and acc["median"] == pytest.approx(0.8)
    assert acc["std"] == pytest.approx(0.1)  # sample standard deviation
    assert acc["values"] == [0.8, 0.9, 0.7]
    assert summarize_seeds([{"f1": 0.5}])["f1"]["std"] == 0.0
    with pytest.raises(BertkitError):
        summarize_seeds([])
