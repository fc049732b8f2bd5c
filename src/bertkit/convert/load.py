"""load_model: any checkpoint format to a ready torch module, with strict name and shape checks.

Missing, unexpected or mis-shaped tensors raise a BertkitError that names them; the only
weights ever initialised at random are a task head the caller asked to create.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.config import HEADS, BertConfig
from bertkit.convert import keymaps
from bertkit.convert.checkpoint import Checkpoint, _names, canonical_state, read_checkpoint
from bertkit.errors import BertkitError, file_error
from bertkit.model import HEAD_CLASSES, init_weights


@dataclass
class LoadInfo:
    """What load_model did, attached to the model as ``model.load_info``."""

    format: str
    path: Path
    vocab_file: Path | None
    do_lower_case: bool | None
    created: list[str] = field(default_factory=list)  # head tensors initialised fresh
    ignored: list[str] = field(default_factory=list)  # other heads' (and an unused pooler's) tensors
    skipped: list[str] = field(default_factory=list)  # optimizer slots, global_step, ...


def load_model(
    path: str | Path,
    head: str | None = None,
    *,
    init_head: bool = False,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **config_overrides: Any,
) -> nn.Module:
    """Load a Google TF, HF or bertkit checkpoint directory as an eval-mode module.

    head: None (bare encoder), "pretraining", "classification", "token_classification", "qa".
    init_head: create the head's weights when the checkpoint has none (fine-tuning from a
    pretrained encoder); otherwise a missing head is an error.
    config_overrides: BertConfig fields, e.g. ``hidden_act="gelu_tanh"`` or ``num_labels=3``.
    """
    return model_from_checkpoint(read_checkpoint(path), head, init_head=init_head, dtype=dtype,
                                 device=device, **config_overrides)


def model_from_checkpoint(ckpt: Checkpoint, head: str | None = None, *, init_head: bool = False,
                          dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                          **config_overrides: Any) -> nn.Module:
    if head not in HEADS:
        raise BertkitError(f"unknown head {head!r} (known: {', '.join(str(h) for h in HEADS)})")
    config = _config_for(ckpt, head, config_overrides)
    _check_vocab(ckpt, config)
    model = empty_model(config, head, device)
    info = LoadInfo(ckpt.format, ckpt.path, ckpt.vocab_file, ckpt.do_lower_case, skipped=ckpt.skipped)
    load_tensors(model, ckpt.tensors, head, init_head=init_head, info=info, source=str(ckpt.path))
    model.load_info = info
    return model.to(device=device, dtype=dtype).eval()


def empty_model(config: BertConfig, head: str | None = None,
                device: str | torch.device | None = None) -> nn.Module:
    """The model with storage on ``device`` left uninitialised, for weights about to be loaded.

    Built on the meta device: the body comes from the checkpoint, so the random draws of
    construction and Google's initializer (8.5 s of CPU for BERT-base) would be thrown away.
    Tied parameters (the MLM decoder is the word embedding table) are tied again afterwards,
    since ``to_empty`` gives each module its own tensor.
    """
    with torch.device("meta"):
        model = HEAD_CLASSES[head](config)
    first: dict[int, tuple[nn.Module, str]] = {}
    ties = []  # (module, name, module it shares with, that module's name)
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in first:
                ties.append((module, name, *first[id(param)]))
            else:
                first[id(param)] = (module, name)
    model.to_empty(device=device or "cpu")
    for module, name, source, source_name in ties:
        setattr(module, name, getattr(source, source_name))
    return model


def _config_for(ckpt: Checkpoint, head: str | None, overrides: dict[str, Any]) -> BertConfig:
    config = ckpt.config
    if ckpt.do_lower_case is not None and config.do_lower_case is None:
        config = config.replace(do_lower_case=ckpt.do_lower_case)
    classifier = ckpt.tensors.get("classifier.weight")
    # Google's fine-tuned checkpoints keep the label count only in the head's shape.
    if (head in ("classification", "token_classification") and classifier is not None
            and config.label_names is None and not {"num_labels", "label_names"} & set(overrides)):
        config = config.replace(num_labels=classifier.shape[0])
    if "extra" in overrides:  # carried keys are added to the checkpoint's, not swapped for them
        overrides = {**overrides, "extra": {**config.extra, **overrides["extra"]}}
    try:
        return config.replace(**overrides)
    except BertkitError as err:
        raise BertkitError(f"{ckpt.path}: {err}") from None


def _check_vocab(ckpt: Checkpoint, config: BertConfig) -> None:
    """A vocab with more entries than embedding rows would index past the table."""
    if ckpt.vocab_file is None:
        return
    with open(ckpt.vocab_file, encoding="utf-8", errors="replace") as handle:
        entries = sum(1 for line in handle if line.strip())
    rows = ckpt.tensors.get("bert.embeddings.word_embeddings.weight")
    rows = config.vocab_size if rows is None else rows.shape[0]
    if entries > rows:
        raise file_error(ckpt.vocab_file, f"has {entries} entries but the word embedding matrix "
                         f"has {rows} rows: this vocab does not belong to this model")


def load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], head: str | None, *,
                 init_head: bool = False, info: LoadInfo | None = None, source: str = "checkpoint") -> None:
    """Copy canonical ``tensors`` into ``model`` after checking names and shapes."""
    own = canonical_state(model)  # canonical name -> parameter/buffer tensor
    head_prefixes = keymaps.HEAD_PREFIXES.get(head, ())
    unexpected = [n for n in tensors if n not in own]
    ignored = [n for n in unexpected if n.startswith(keymaps.OPTIONAL_PREFIXES) and not n.startswith(head_prefixes)]
    unexpected = [n for n in unexpected if n not in ignored]
    if unexpected:
        raise BertkitError(f"{source}: unexpected tensors not in a BERT {head or 'encoder'}: {_names(unexpected)}")
    missing = [n for n in own if n not in tensors]
    missing_head = [n for n in missing if n.startswith(head_prefixes)] if head_prefixes else []
    missing_body = [n for n in missing if n not in missing_head]
    if missing_body or (missing_head and not init_head):
        hint = "; pass init_head=True (--init-head) to create a new head" if missing_head and not missing_body else ""
        raise BertkitError(f"{source}: missing tensors: {_names(missing_body + missing_head)}{hint}")
    _check_shapes(own, tensors, source)
    with torch.no_grad():
        # A new head's modules are drawn whole, then any tensor of theirs the checkpoint has
        # is copied over the draw.
        for path in dict.fromkeys(name.rsplit(".", 1)[0] for name in missing_head):
            init_weights(model.get_submodule(path), model.config.initializer_range)
        for name, target in own.items():
            if name in tensors:
                target.copy_(tensors[name])
    if info is not None:
        info.created, info.ignored = missing_head, ignored


def _check_shapes(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    wrong = [f"{n} is {list(tensors[n].shape)}, model expects {list(t.shape)}"
             for n, t in own.items() if n in tensors and tensors[n].shape != t.shape]
    if wrong:
        hint = ""
        if any(w.startswith("classifier.") for w in wrong):
            hint = " (the head was trained with a different label set: num_labels disagrees)"
        raise BertkitError(f"{source}: mis-shaped tensors: {'; '.join(wrong[:4])}{hint}")
