"""Tensor names across formats, as lookup rules.

bertkit's canonical names are HF's full-model names (``bert.`` prefix, ``cls.``,
``classifier.``, ``qa_outputs.``), which are also the module paths in ``model.py``. Google's
TF names are the same path with ``/``, ``layer_N``, ``kernel`` (stored [in, out], so
transposed), ``gamma``/``beta``, plus a few irregular head names listed below.
"""

from __future__ import annotations

import re

# Google TF variable name -> canonical name, for the irregular ones.
_GOOGLE_SPECIAL = {
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
    "output_weights": "classifier.weight",  # run_classifier.py (and Google-style NER scripts)
    "output_bias": "classifier.bias",
    "cls/squad/output_weights": "qa_outputs.weight",  # run_squad.py
    "cls/squad/output_bias": "qa_outputs.bias",
    "answer_type_output_weights": "answer_type_output.weight",  # BERT-joint's run_nq.py
    "answer_type_output_bias": "answer_type_output.bias",
}
_CANONICAL_SPECIAL = {v: k for k, v in _GOOGLE_SPECIAL.items()}
# run_nq.py keeps its span layer under cls/nq/ (run_squad.py's under cls/squad/).
_GOOGLE_NQ = {"cls/nq/output_weights": "qa_outputs.weight", "cls/nq/output_bias": "qa_outputs.bias"}
_CANONICAL_NQ = {v: k for k, v in _GOOGLE_NQ.items()}
_FROM_GOOGLE = {**_GOOGLE_SPECIAL, **_GOOGLE_NQ}

# Variables in Google checkpoints that are not model weights: optimizer slots and bookkeeping.
_GOOGLE_SKIP = re.compile(
    r"(^|/)(adam_[mv]|Adam(_1)?|Momentum|LAMB(_1)?)$|^global_step$|"
    r"(^|/)(loss_scale|good_steps|current_loss_scale)(/|$)|^beta[12]_power$"
)

# Tensor-name prefixes that belong to a task head; the rest (``bert.``) is the encoder.
HEAD_PREFIXES = {
    "pretraining": ("cls.",),
    "classification": ("classifier.",),
    "token_classification": ("classifier.",),
    "qa": ("qa_outputs.",),
    "nq": ("qa_outputs.", "answer_type_output."),
}
ALL_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "answer_type_output.")
# Tensors a model may leave out without error: other heads, and the pooler (token-level heads
# have none, yet Google's fine-tuned SQuAD checkpoints carry one).
OPTIONAL_PREFIXES = (*ALL_HEAD_PREFIXES, "bert.pooler.")


def google_is_weight(name: str) -> bool:
    """False for optimizer slots, global_step and loss-scale bookkeeping."""
    return not _GOOGLE_SKIP.search(name)


def google_to_canonical(name: str) -> tuple[str, bool]:
    """(canonical name, transpose?) for a Google variable name.

    Raises KeyError for a name outside the BERT layout (the caller reports it).
    """
    if name in _FROM_GOOGLE:
        return _FROM_GOOGLE[name], False
    if not name.startswith(("bert/", "cls/")):
        raise KeyError(name)
    *module, last = name.split("/")
    if last in _GOOGLE_SUFFIX:
        suffix = _GOOGLE_SUFFIX[last]
    elif last.endswith("_embeddings"):  # tables: bert/embeddings/word_embeddings
        module, suffix = [*module, last], "weight"
    else:
        raise KeyError(name)
    path = re.sub(r"\blayer_(\d+)\b", r"layer.\1", ".".join(module))
    return f"{path}.{suffix}", last == "kernel"


_GOOGLE_SUFFIX = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}


def canonical_to_google(name: str, head: str | None = None) -> tuple[str, bool]:
    """(Google variable name, transpose?) for a canonical name of a model with ``head``; inverse
    of google_to_canonical."""
    if head == "nq" and name in _CANONICAL_NQ:
        return _CANONICAL_NQ[name], False
    if name in _CANONICAL_SPECIAL:
        return _CANONICAL_SPECIAL[name], False
    parts = re.sub(r"\blayer\.(\d+)\b", r"layer_\1", name).split(".")
    module, last = parts[:-1], parts[-1]
    if module[-1].endswith("_embeddings"):
        return "/".join(module), False
    if module[-1] == "LayerNorm":
        return "/".join(module + ["gamma" if last == "weight" else "beta"]), False
    if last == "weight":
        return "/".join(module + ["kernel"]), True
    return "/".join(module + [last]), False


def hf_to_canonical(name: str) -> str | None:
    """Canonical name for an HF state-dict key; None for keys that hold no weight of ours.

    Handles bare BertModel files (no ``bert.`` prefix), the legacy ``gamma``/``beta``
    LayerNorm names of old ``pytorch_model.bin`` files, and the tied MLM decoder.
    """
    if name.endswith("position_ids") or name.endswith("token_type_ids"):
        return None  # buffers, not weights
    if name in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
        return None  # tied to word embeddings / duplicate of cls.predictions.bias
    if name.startswith(("embeddings.", "encoder.", "pooler.")):
        name = "bert." + name
    if ".LayerNorm.gamma" in name or ".LayerNorm.beta" in name:
        name = name.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(".LayerNorm.beta", ".LayerNorm.bias")
    return name


def canonical_to_hf(name: str, head: str | None) -> str:
    """HF key for a canonical name: a bare BertModel file has no ``bert.`` prefix."""
    if head is None and name.startswith("bert."):
        return name[len("bert."):]
    return name
