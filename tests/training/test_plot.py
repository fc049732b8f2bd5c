"""Training curves from metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from bertkit.errors import BertkitError
from bertkit.training.monitor import read_metrics, truncate_metrics
from bertkit.training.plot import panels, plot_run

RECORDS = [{"step": s, "loss": 4.0 / s, "mlm_loss": 3.0 / s, "nsp_loss": 1.0 / s, "mlm_accuracy": 0.1 * s,
            "nsp_accuracy": 0.5, "lr": 1e-4, "tokens_per_s": 1000.0, "grad_norm": 1.0, "elapsed": s,
            "f1": 0.5} for s in (1, 2, 3)]


def write(run, records, tail: str = "") -> None:
    run.mkdir(exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_panels_group_metrics():
    assert panels(RECORDS) == [("loss", ["loss", "mlm_loss", "nsp_loss"]),
                               ("accuracy", ["mlm_accuracy", "nsp_accuracy"]), ("learning rate", ["lr"]),
                               ("tokens / s", ["tokens_per_s"]), ("gradient norm (before clipping)", ["grad_norm"]),
                               ("other", ["f1"])]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    write(tmp_path / "run", RECORDS)
    out = plot_run(tmp_path / "run")
    assert out == tmp_path / "run" / "training_curves.png" and out.read_bytes()[:4] == b"\x89PNG"


def test_metrics_file_survives_a_cut_last_line_and_truncates(tmp_path):
    write(tmp_path / "run", RECORDS, tail='{"step": 4, "lo')  # a run killed mid-write
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]
    truncate_metrics(tmp_path / "run", 2)
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(BertkitError, match="metrics.jsonl: no such file"):
        plot_run(tmp_path)


def test_without_matplotlib_the_error_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    write(tmp_path / "run", RECORDS)
    with pytest.raises(BertkitError, match=r"pip install 'bertkit\[plot\]'"):
        plot_run(tmp_path / "run")
