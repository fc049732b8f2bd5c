"""Feature extraction in the layout of Google's extract_features.py.

Input: one example per line, ``text_a ||| text_b`` for pairs. Output: JSON Lines, one object
per example: ``{"linex_index": i, "features": [{"token": t, "layers": [{"index": -1,
"values": [...]}, ...]}, ...]}`` with values rounded to 6 decimals, real tokens only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bertkit.errors import BertkitError, file_error
from bertkit.io import atomic_open
from bertkit.tokenizer import BertTokenizer

_PAIR = re.compile(r"^(.*) \|\|\| (.*)$")


@dataclass
class Example:
    index: int
    text_a: str
    text_b: str | None


def read_examples(path: str | Path) -> list[Example]:
    """Every line is an example (Google strips it and splits pairs on `` ||| ``)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise file_error(path, "input file not found") from None
    except IsADirectoryError:
        raise file_error(path, "is a directory, expected a text file") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise file_error(path, "input file is empty")
    examples = []
    for i, line in enumerate(lines):
        line = line.strip()
        match = _PAIR.match(line)
        examples.append(Example(i, *(match.groups() if match else (line, None))))
    return examples


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """``-1,-2,-3,-4`` -> indices into the L encoder layers, Python-style as Google's
    (``-1`` the last layer, ``0`` the first layer's output)."""
    try:
        layers = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise BertkitError(f"--layers: expected comma-separated integers, got {spec!r}") from None
    bad = [x for x in layers if not -num_layers <= x < num_layers]
    if not layers or bad:
        raise BertkitError(f"--layers: {spec!r} is out of range for a {num_layers}-layer model "
                           f"(use -{num_layers}..{num_layers - 1})")
    return layers


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    tokenizer: BertTokenizer,
    examples: Sequence[Example],
    layers: Sequence[int],
    max_seq_length: int = 128,
    batch_size: int = 32,
) -> Iterator[dict]:
    """Yield one Google-layout feature dict per example, in input order.

    Batches are formed from length-sorted windows of examples, so little work goes to padding.
    Layer -k is the output of the k-th last Transformer layer, layer 0 of the first.
    """
    device = next(model.parameters()).device
    window = batch_size * 32
    for start in range(0, len(examples), window):
        chunk = examples[start:start + window]
        encodings = tokenizer.encode_batch([(e.text_a, e.text_b) for e in chunk], max_length=max_seq_length)
        order = sorted(range(len(chunk)), key=lambda i: len(encodings[i].ids))
        results: dict[int, dict] = {}
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            batch = tokenizer.pad([encodings[i] for i in idx], return_tensors="pt")
            out = model(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=True)
            encoder_layers = out.hidden_states[1:]  # drop the embedding output, as Google's all_layers
            chosen = torch.stack([encoder_layers[layer] for layer in layers], 1)  # (B, K, T, H)
            chosen = chosen.float().cpu()
            for row, i in enumerate(idx):
                results[i] = _feature(chunk[i].index, encodings[i].tokens, chosen[row], layers)
        for i in range(len(chunk)):
            yield results[i]


def _feature(index: int, tokens: list[str], values: torch.Tensor, layers: Sequence[int]) -> dict:
    """values (K, T, H) for one example; only its real tokens are written."""
    rounded = values[:, : len(tokens)].double().numpy().round(6).tolist()  # K × T × H floats
    features = [
        {"token": token, "layers": [{"index": layer, "values": rounded[k][t]} for k, layer in enumerate(layers)]}
        for t, token in enumerate(tokens)
    ]
    return {"linex_index": index, "features": features}


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records atomically, one JSON object per line; returns how many were written."""
    count = 0
    with atomic_open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1
    return count
