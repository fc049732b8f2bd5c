"""Precision helpers: autocast contexts, the fp16 refusal off GPU, the slow-bf16 warning."""

from __future__ import annotations

import logging

import pytest
import torch

from bertkit.errors import BertkitError
from bertkit.training import precision


@pytest.fixture
def fresh_warning():
    precision.warn_slow_bf16.cache_clear()
    yield
    precision.warn_slow_bf16.cache_clear()


@pytest.mark.parametrize("supported", [True, False])
def test_bf16_warns_once_where_the_cpu_lacks_it(monkeypatch, caplog, fresh_warning, supported):
    monkeypatch.setattr(precision, "native_bf16", lambda device: supported)
    with caplog.at_level(logging.WARNING, logger="bertkit.precision"):
        for _ in range(3):
            with precision.autocast("bf16", torch.device("cpu")):
                pass
    warnings = [r for r in caplog.records if "100x slower" in r.getMessage()]
    assert len(warnings) == (0 if supported else 1)


def test_fp32_never_warns(monkeypatch, caplog, fresh_warning):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="bertkit.precision"), precision.autocast("fp32", torch.device("cpu")):
        pass
    assert not caplog.records


def test_native_bf16_agrees_with_a_measurement():
    """oneDNN's own report, checked against what a bf16 product costs against float32 here."""
    import time

    a, b = torch.randn(512, 512), torch.randn(512, 512)

    def best(x, y):
        x @ y
        times = []
        for _ in range(3):
            start = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - start)
        return min(times)

    ratio = best(a.bfloat16(), b.bfloat16()) / best(a, b)
    # With hardware bf16 a product costs at most about what float32's does; without, 30-100x more.
    assert precision.native_bf16(torch.device("cpu")) == (ratio < 10), ratio


def test_fp16_needs_a_gpu():
    with pytest.raises(BertkitError, match="needs a GPU"):
        precision.check_precision("fp16", torch.device("cpu"))
