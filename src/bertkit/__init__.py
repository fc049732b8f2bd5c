"""bertkit: a complete, fast, faithful BERT system on PyTorch.

Stable API:
    load_model(path, head=None, **config_overrides)  -> eval-mode torch module, any checkpoint format
    load_tokenizer(path_or_vocab, lower_case=None)   -> Google-exact WordPiece tokenizer
    BertConfig, preset(name), build_model(config, head)

Names are imported on first use, so that ``import bertkit.data.sentences`` (say, in a worker
process) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BertConfig": "bertkit.config", "preset": "bertkit.config",
    "export_google": "bertkit.convert.checkpoint", "export_hf": "bertkit.convert.checkpoint",
    "read_checkpoint": "bertkit.convert.checkpoint", "save_bertkit": "bertkit.convert.checkpoint",
    "load_model": "bertkit.convert.load",
    "BertkitError": "bertkit.errors",
    "BertOutput": "bertkit.model", "build_model": "bertkit.model",
    "BertTokenizer": "bertkit.tokenizer", "load_tokenizer": "bertkit.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bertkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
