"""Read any supported checkpoint into canonical tensors; write bertkit's own and HF's formats.

Formats, auto-detected from a directory's files:
- ``google``: ``bert_config.json`` + ``*.ckpt.index``/``.data-*`` (read without TensorFlow)
- ``hf``: ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin`` (weights-only load)
- ``bertkit``: ``bertkit.json`` + ``model.safetensors`` + ``vocab.txt``
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bertkit.config import BertConfig
from bertkit.convert import keymaps
from bertkit.convert.tf_bundle import find_tf_checkpoint, read_tf_checkpoint, write_tf_checkpoint
from bertkit.errors import BertkitError, file_error
from bertkit.io import atomic_write_text, temp_path_beside

BERTKIT_FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A checkpoint read into memory: config, canonical tensors and where its vocab lives."""

    format: str  # "google", "hf" or "bertkit"
    path: Path
    config: BertConfig
    tensors: dict[str, torch.Tensor]  # canonical names (see keymaps)
    vocab_file: Path | None = None
    do_lower_case: bool | None = None
    head: str | None = None  # bertkit format: the head it was saved with
    skipped: list[str] = field(default_factory=list)  # optimizer slots etc., not model weights

    def heads(self) -> list[str]:
        """Task heads whose weights the checkpoint holds (a classifier's kind is known only
        when the checkpoint says it, as bertkit's format does)."""
        found = []
        if any(name.startswith("cls.") for name in self.tensors):
            found.append("pretraining")
        if any(name.startswith("classifier.") for name in self.tensors):
            found.append(self.head if self.head == "token_classification" else "classification")
        if any(name.startswith("answer_type_output.") for name in self.tensors):
            found.append("nq")  # its span layer is qa_outputs: loading it as "qa" works too
        elif any(name.startswith("qa_outputs.") for name in self.tensors):
            found.append("qa")
        return found


def detect_format(path: str | Path) -> str:
    """Which format a directory holds; BertkitError if none."""
    path = Path(path)
    if not path.exists():
        raise file_error(path, "no such file or directory")
    if not path.is_dir():
        raise file_error(path, "expected a checkpoint directory (Google TF, HF or bertkit)")
    if (path / "bertkit.json").is_file():
        return "bertkit"
    if (path / "config.json").is_file() and any((path / f).is_file() for f in _HF_WEIGHTS):
        return "hf"
    if find_tf_checkpoint(path) is not None:
        return "google"
    raise file_error(path, "holds no checkpoint (looked for bertkit.json, config.json with "
                     "model.safetensors/pytorch_model.bin, or a TF *.ckpt.index)")


_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint directory of any supported format."""
    path = Path(path)
    reader = {"google": _read_google, "hf": _read_hf, "bertkit": _read_bertkit}[detect_format(path)]
    return reader(path)


def read_config(path: str | Path) -> tuple[str, BertConfig]:
    """(format, config) without reading the weights."""
    path = Path(path)
    fmt = detect_format(path)
    name = {"google": "bert_config.json", "hf": "config.json", "bertkit": "bertkit.json"}[fmt]
    if fmt == "bertkit":
        return fmt, _bertkit_meta(path)[0]
    return fmt, BertConfig.from_json_file(path / name)


def _vocab(path: Path) -> Path | None:
    vocab = path / "vocab.txt"
    return vocab if vocab.is_file() else None


def _read_google(path: Path) -> Checkpoint:
    config_file = path / "bert_config.json"
    if not config_file.is_file():
        raise file_error(config_file, "missing: a Google checkpoint directory needs bert_config.json")
    config = BertConfig.from_json_file(config_file)
    prefix = find_tf_checkpoint(path)
    arrays = read_tf_checkpoint(prefix)
    tensors, skipped, unknown = {}, [], []
    for name, array in arrays.items():
        if not keymaps.google_is_weight(name):
            skipped.append(name)
            continue
        try:
            canonical, transpose = keymaps.google_to_canonical(name)
        except KeyError:
            unknown.append(name)
            continue
        tensors[canonical] = _to_torch(array.T if transpose else array)
    if unknown:
        raise file_error(f"{prefix}.index", f"variables outside the BERT layout: {_names(unknown)}")
    return Checkpoint("google", path, config, tensors, _vocab(path), skipped=skipped)


def _read_hf(path: Path) -> Checkpoint:
    config = BertConfig.from_json_file(path / "config.json")
    if config.extra.get("model_type", "bert") not in ("bert",):
        raise file_error(path / "config.json", f"model_type {config.extra['model_type']!r} is not BERT")
    raw = _load_weights(path)
    tensors = {}
    for name, tensor in raw.items():
        canonical = keymaps.hf_to_canonical(name)
        if canonical is not None:
            tensors[canonical] = tensor
    if "cls.predictions.bias" not in tensors and "cls.predictions.decoder.bias" in raw:
        tensors["cls.predictions.bias"] = raw["cls.predictions.decoder.bias"]
    lower = None
    tok_config = path / "tokenizer_config.json"
    if tok_config.is_file():
        try:
            lower = json.loads(tok_config.read_text(encoding="utf-8")).get("do_lower_case")
        except json.JSONDecodeError as err:
            raise file_error(tok_config, f"not valid JSON ({err})") from None
    return Checkpoint("hf", path, config, tensors, _vocab(path), do_lower_case=lower)


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    safetensors_file = path / "model.safetensors"
    try:
        if safetensors_file.is_file():
            return load_file(str(safetensors_file))
        bin_file = path / "pytorch_model.bin"
        # weights_only: a checkpoint is data; never run pickled code from it.
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError) as err:
        name = safetensors_file if safetensors_file.is_file() else path / "pytorch_model.bin"
        raise file_error(name, f"cannot read weights ({_first_line(err)})") from None
    if not isinstance(state, dict):
        raise file_error(path / "pytorch_model.bin", "does not hold a state dict")
    return state


def _bertkit_meta(path: Path) -> tuple[BertConfig, dict]:
    meta_file = path / "bertkit.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        config_dict = meta["config"]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise file_error(meta_file, f"not valid JSON ({err})") from None
    except (KeyError, TypeError):
        raise file_error(meta_file, "missing the 'config' object") from None
    return BertConfig.from_dict(config_dict, source=str(meta_file)), meta


def _read_bertkit(path: Path) -> Checkpoint:
    config, meta = _bertkit_meta(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise file_error(weights, "missing: a bertkit checkpoint needs model.safetensors")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise file_error(weights, f"cannot read weights ({_first_line(err)})") from None
    return Checkpoint("bertkit", path, config, tensors, _vocab(path),
                      do_lower_case=config.do_lower_case, head=meta.get("head"))


def _to_torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _names(names: list[str], most: int = 8) -> str:
    shown = ", ".join(sorted(names)[:most])
    return shown + (f" (+{len(names) - most} more)" if len(names) > most else "")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# --- writing ----------------------------------------------------------------------------------


def canonical_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under canonical names, sharing storage with the model.

    The tied MLM decoder is left out: it is the word embedding table.
    """
    prefix = "" if getattr(model, "head", None) else "bert."
    return {prefix + name: tensor.detach() for name, tensor in model.state_dict().items()
            if name != "cls.predictions.decoder.weight"}


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tmp = temp_path_beside(path)
    try:
        save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_vocab(vocab_file: str | Path | None, out: Path) -> None:
    if vocab_file is not None:
        atomic_write_text(out / "vocab.txt", Path(vocab_file).read_text(encoding="utf-8"))


def save_bertkit(model: torch.nn.Module, out: str | Path, vocab_file: str | Path | None = None,
                 do_lower_case: bool | None = None) -> Path:
    """bertkit's own format: model.safetensors (canonical names), bertkit.json, vocab.txt.

    bertkit.json is written last, so a directory without it is not a finished checkpoint.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config if do_lower_case is None else model.config.replace(do_lower_case=do_lower_case)
    head = getattr(model, "head", None)
    _save_safetensors(out / "model.safetensors", canonical_state(model), {"format": "pt"})
    _copy_vocab(vocab_file, out)
    meta = {"format": "bertkit", "format_version": BERTKIT_FORMAT_VERSION, "head": head,
            "config": config.to_dict()}
    atomic_write_text(out / "bertkit.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


_HF_ARCH = {None: "BertModel", "pretraining": "BertForPreTraining",
            "classification": "BertForSequenceClassification",
            "token_classification": "BertForTokenClassification", "qa": "BertForQuestionAnswering"}


def export_hf(model: torch.nn.Module, out: str | Path, vocab_file: str | Path | None = None,
              do_lower_case: bool | None = None) -> Path:
    """An HF directory that transformers' ``from_pretrained`` loads unchanged."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    head = getattr(model, "head", None)
    if head not in _HF_ARCH:
        raise BertkitError(f"transformers has no model with bertkit's {head!r} head; write the bertkit or "
                           "google format, or keep only the span head (--head qa) or none")
    config = model.config
    hf_config = config.to_hf_dict(_HF_ARCH[head])
    if config.num_labels == 1 and head == "classification":
        hf_config["problem_type"] = "regression"
    if head == "qa":  # HF sizes qa_outputs by num_labels: start and end
        hf_config.update(num_labels=2)
        hf_config.pop("id2label", None), hf_config.pop("label2id", None)
    tensors = {keymaps.canonical_to_hf(k, head): v for k, v in canonical_state(model).items()}
    _save_safetensors(out / "model.safetensors", tensors, {"format": "pt"})
    _copy_vocab(vocab_file, out)
    lower = config.do_lower_case if do_lower_case is None else do_lower_case
    tok = {"tokenizer_class": "BertTokenizer", "do_lower_case": bool(lower) if lower is not None else True,
           "model_max_length": config.max_position_embeddings}
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tok, indent=2) + "\n")
    atomic_write_text(out / "config.json", json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return out


def export_google(model: torch.nn.Module, out: str | Path, vocab_file: str | Path | None = None) -> Path:
    """A Google TF checkpoint directory (bert_config.json, bert_model.ckpt.*, vocab.txt)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, tensor in canonical_state(model).items():
        google, transpose = keymaps.canonical_to_google(name, getattr(model, "head", None))
        array = tensor.float().cpu().numpy()
        arrays[google] = np.ascontiguousarray(array.T if transpose else array)
    write_tf_checkpoint(out / "bert_model.ckpt", arrays)
    _copy_vocab(vocab_file, out)
    atomic_write_text(out / "bert_config.json", json.dumps(model.config.to_google_dict(), indent=2) + "\n")
    return out
