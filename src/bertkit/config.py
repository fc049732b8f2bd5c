"""BertConfig: the model's shape, read from and written to Google's and HF's JSON files.

Google's ``bert_config.json`` and HF's ``config.json`` share most keys; this module maps both
onto one dataclass. The activation names differ between the worlds, so bertkit names them
distinctly: ``gelu`` is the exact erf form (what HF reads "gelu" as, and what Google's
released checkpoints were trained with), ``gelu_tanh`` is the tanh approximation (what
Google's code has computed for "gelu" since February 2019, HF's "gelu_new").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.errors import BertkitError, file_error

# bertkit activation name -> accepted spellings in Google/HF configs.
ACTIVATIONS = {
    "gelu": ("gelu", "gelu_erf", "gelu_python"),
    "gelu_tanh": ("gelu_tanh", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"),
    "relu": ("relu",),
    "silu": ("silu", "swish"),
    "tanh": ("tanh",),
}
_ACT_ALIASES = {alias: name for name, aliases in ACTIVATIONS.items() for alias in aliases}
# How each activation is written into an HF config.json so transformers computes the same thing.
_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu", "tanh": "tanh"}

HEADS = (None, "pretraining", "classification", "token_classification", "qa", "nq")


@dataclass
class BertConfig:
    vocab_size: int = 30522  # rows of the word embedding and of the MLM decoder
    hidden_size: int = 768  # H, width of every layer
    num_hidden_layers: int = 12  # L, Transformer layers
    num_attention_heads: int = 12  # A; head size = H / A
    intermediate_size: int = 3072  # width of the feed-forward layer, usually 4H
    hidden_act: str = "gelu"  # "gelu" (erf), "gelu_tanh", "relu", "silu", "tanh"
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and every residual branch
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segment (token type) ids: A and B
    initializer_range: float = 0.02  # stddev of the truncated-normal initializer
    layer_norm_eps: float = 1e-12  # Google's LayerNorm epsilon
    pad_token_id: int = 0
    use_relative_positions: bool = False  # NEZHA functional (sinusoidal) relative positions
    max_relative_position: int = 64  # NEZHA clip distance for relative positions
    # Task heads: labels of a classification / token-classification head; num_labels 1 = regression.
    num_labels: int = 2
    label_names: list[str] | None = None
    # Tokenizer case, when known (bertkit's own format and HF configs record it).
    do_lower_case: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys we carry but do not use

    def __post_init__(self) -> None:
        self.hidden_act = normalize_activation(self.hidden_act)
        if self.hidden_size % self.num_attention_heads:
            raise BertkitError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, name) <= 0:
                raise BertkitError(f"config field {name} must be positive, got {getattr(self, name)}")
        if self.label_names is not None:
            self.num_labels = len(self.label_names)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **overrides: Any) -> "BertConfig":
        """A copy with some fields changed; unknown field names raise BertkitError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise BertkitError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    # --- JSON -------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "BertConfig":
        """Read a Google ``bert_config.json`` or HF ``config.json`` dict (extra keys are kept)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "label_names"}
        kwargs = {k: data[k] for k in known if k in data}
        labels = _labels_from_hf(data.get("id2label"))
        if labels is not None and "num_labels" not in data:
            kwargs["num_labels"] = len(labels)
        if data.get("label_names"):
            labels = list(data["label_names"])
        # Only carry real label names; HF writes LABEL_0.. when there are none.
        if labels and not all(lbl == f"LABEL_{i}" for i, lbl in enumerate(labels)):
            kwargs["label_names"] = labels
        # Catch the classic crash early: a missing key that the model cannot do without.
        for required in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if required not in data:
                raise BertkitError(f"{source}: missing required key '{required}'")
        if "intermediate_size" not in data:
            kwargs["intermediate_size"] = 4 * int(data["hidden_size"])
        if data.get("position_embedding_type") not in (None, "absolute"):
            raise BertkitError(
                f"{source}: position_embedding_type {data['position_embedding_type']!r} "
                "is not supported (absolute, or NEZHA's use_relative_positions)"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs["extra"] = {k: v for k, v in data.items() if k not in fields and k not in _DROPPED_KEYS}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise BertkitError(f"{source}: {err}") from None
        except BertkitError as err:
            raise BertkitError(f"{source}: {err}") from None

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise file_error(path, "config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise file_error(path, f"not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise file_error(path, "config must be a JSON object")
        return cls.from_dict(data, source=str(path))

    def to_google_dict(self) -> dict[str, Any]:
        """Google's ``bert_config.json`` keys. Note Google's code reads "gelu" as whatever GELU
        its version computes; we write "gelu" for both GELUs, as Google's own files do."""
        return {
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "hidden_act": "gelu" if self.hidden_act.startswith("gelu") else self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "hidden_size": self.hidden_size,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "type_vocab_size": self.type_vocab_size,
            "vocab_size": self.vocab_size,
        }

    def to_hf_dict(self, architecture: str = "BertModel") -> dict[str, Any]:
        """An HF ``config.json`` that transformers loads as the same model."""
        data = self.to_google_dict()
        data.update(
            architectures=[architecture],
            model_type="bert",
            hidden_act=_HF_ACT[self.hidden_act],
            layer_norm_eps=self.layer_norm_eps,
            pad_token_id=self.pad_token_id,
            position_embedding_type="absolute",
            num_labels=self.num_labels,
        )
        if self.label_names:
            data["id2label"] = {str(i): lbl for i, lbl in enumerate(self.label_names)}
            data["label2id"] = {lbl: i for i, lbl in enumerate(self.label_names)}
        if self.use_relative_positions:
            raise BertkitError("a model with NEZHA relative positions has no HF BERT equivalent")
        return data

    def to_dict(self) -> dict[str, Any]:
        """bertkit's own config: every field, activation by its bertkit name."""
        data = dataclasses.asdict(self)
        extra = data.pop("extra")
        return {**extra, **data}

    def to_json_file(self, path: str | Path, flavour: str = "bertkit") -> None:
        data = {"bertkit": self.to_dict, "google": self.to_google_dict, "hf": self.to_hf_dict}[flavour]()
        write_json_atomic(path, data)


_DROPPED_KEYS = {"id2label", "label2id", "architectures", "model_type", "transformers_version",
                 "torch_dtype", "dtype", "_name_or_path", "position_embedding_type"}


def _labels_from_hf(id2label: Any) -> list[str] | None:
    if not isinstance(id2label, dict) or not id2label:
        return None
    return [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))]


def normalize_activation(name: str) -> str:
    """Map any accepted spelling to bertkit's name; an unknown activation raises BertkitError."""
    try:
        return _ACT_ALIASES[str(name).lower()]
    except KeyError:
        known = ", ".join(sorted(_ACT_ALIASES))
        raise BertkitError(f"unknown activation hidden_act={name!r} (known: {known})") from None


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to a temp file beside ``path`` and rename it into place."""
    from bertkit.io import atomic_write_text  # local import keeps config importable alone

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


# --- presets: Google's released sizes -----------------------------------------------------

_SMALL_LAYERS = (2, 4, 6, 8, 10, 12)
_SMALL_HIDDEN = (128, 256, 512, 768)


def preset(name: str) -> BertConfig:
    """A config for one of Google's released sizes.

    ``base``/``large`` (also ``bert-base``/``bert-large``), and the 24 smaller models of
    "Well-Read Students Learn Better" as ``L-4_H-256`` (``tiny`` = L-2_H-128, ``mini`` =
    L-4_H-256, ``small`` = L-4_H-512, ``medium`` = L-8_H-512). Heads are H/64, FFN 4H.
    """
    key = name.lower().removeprefix("bert-").removeprefix("uncased_").replace("a-", "A-")
    key = _PRESET_ALIASES.get(key, key)
    if key == "base":
        return BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    if key == "large":
        return BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    parts = dict(p.split("-", 1) for p in key.upper().split("_") if "-" in p)
    try:
        layers, hidden = int(parts["L"]), int(parts["H"])
    except (KeyError, ValueError):
        raise BertkitError(f"unknown model preset {name!r} (known: {', '.join(preset_names())})") from None
    if layers not in _SMALL_LAYERS or hidden not in _SMALL_HIDDEN:
        raise BertkitError(f"unknown model preset {name!r} (known: {', '.join(preset_names())})")
    return BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                      intermediate_size=4 * hidden)


_PRESET_ALIASES = {"tiny": "L-2_H-128", "mini": "L-4_H-256", "small": "L-4_H-512", "medium": "L-8_H-512"}


def preset_names() -> list[str]:
    small = [f"L-{layer}_H-{hidden}" for layer in _SMALL_LAYERS for hidden in _SMALL_HIDDEN]
    return ["base", "large", *_PRESET_ALIASES, *small]


def parameter_count(config: BertConfig) -> int:
    """Parameters of the bare encoder with pooler (no heads), from the config alone."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    positions = 0 if config.use_relative_positions else config.max_position_embeddings
    emb = (config.vocab_size + positions + config.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    return emb + layers * layer + (h * h + h)

