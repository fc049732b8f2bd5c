"""Google's own outputs: a TF checkpoint written by google-research/bert and every output its
code computed, under both GELU eras (../shared/golden/google/dev/model)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit import load_model
from shared_data import GOLDEN, require_shared

TOL = 1e-4  # Google's own CPU backends differ by ~4e-6; the two GELU eras by up to ~1e-3


@lru_cache(maxsize=2)
def golden(name: str) -> dict:
    return json.loads((GOLDEN / "model" / name).read_text())


def run(model_dir: Path, hidden_act: str | None, data: dict, unpad: bool = False):
    """Google's batch through our model: the padded reference path, or (unpad) the packed fast path."""
    overrides = {"hidden_act": hidden_act} if hidden_act else {}
    model = load_model(model_dir, head="pretraining", **overrides)
    model.bert.unpad = unpad
    inputs = data["inputs"]
    with torch.no_grad():
        return model(
            torch.tensor(inputs["input_ids"]),
            torch.tensor(inputs["segment_ids"]),
            torch.tensor(inputs["input_mask"]),
            masked_lm_positions=torch.tensor(inputs["masked_lm_positions"]),
            output_hidden_states=True,
        )


def max_diff(ours: torch.Tensor, theirs, where: torch.Tensor | None = None) -> float:
    """Max |ours - theirs|, over the (B, T) positions ``where`` only when given."""
    theirs = torch.tensor(np.asarray(theirs, dtype=np.float32)).double()
    if where is not None:
        ours, theirs = ours[where], theirs[where]
    return float((ours.double() - theirs).abs().max())


# golden.json: Google's code since Feb 2019 (tanh GELU); golden_gelu_erf.json: the 2018 code (erf).
# The padded reference path must match at every position, padding included; the unpadded fast
# path leaves zeros at padding, so its hidden states are compared at the real tokens.
@pytest.mark.parametrize("unpad", [False, True], ids=["padded", "unpadded"])
@pytest.mark.parametrize("file,hidden_act", [("golden.json", "gelu_tanh"), ("golden_gelu_erf.json", None)])
def test_every_output_matches_google(file, hidden_act, unpad):
    model_dir = require_shared("golden", "google", "dev", "model")
    data = golden(file)
    out = run(model_dir, hidden_act, data, unpad)
    expected = data["outputs"]
    real = torch.tensor(data["inputs"]["input_mask"]).bool() if unpad else None
    assert real is None or not real.all()  # the batch has padding: the fast path is exercised
    assert max_diff(out.hidden_states[0], expected["embedding_output"], real) < TOL
    for layer, ref in enumerate(expected["all_encoder_layers"]):
        assert max_diff(out.hidden_states[layer + 1], ref, real) < TOL, f"layer {layer}"
    assert max_diff(out.pooled_output, expected["pooled_output"]) < TOL
    assert max_diff(out.nsp_logits.log_softmax(-1), expected["nsp_log_probs"]) < TOL

    log_probs = out.mlm_logits.log_softmax(-1)  # (B, P, V)
    top = log_probs.topk(10, dim=-1)
    assert top.indices.tolist() == expected["mlm_top10_ids"]
    assert max_diff(top.values, expected["mlm_top10_log_probs"]) < TOL
    labels = torch.tensor(data["inputs"]["masked_lm_ids"])
    at_label = log_probs.gather(-1, labels[..., None])[..., 0]
    assert max_diff(at_label, expected["mlm_log_prob_at_label"]) < TOL
    for row in expected["mlm_full_log_probs"]:
        assert max_diff(log_probs[row["example"], row["slot"]], row["log_probs"]) < TOL


def test_the_two_gelu_eras_are_told_apart():
    """The default 'gelu' (erf) must NOT match the tanh-era outputs at our tolerance."""
    model_dir = require_shared("golden", "google", "dev", "model")
    data = golden("golden.json")
    out = run(model_dir, None, data)
    assert max_diff(out.last_hidden_state, data["outputs"]["all_encoder_layers"][-1]) > TOL


def test_google_packing_of_golden_examples():
    """Tokenization and [CLS] A [SEP] B [SEP] packing with Google's truncation, on Google's examples."""
    require_shared("golden", "google", "dev", "model")
    from bertkit import load_tokenizer

    tokenizer = load_tokenizer(GOLDEN / "model", lower_case=True)
    data = golden("golden.json")
    for example in data["examples"]:
        enc = tokenizer.encode(example["text_a"], example["text_b"], max_length=data["max_seq_length"])
        assert enc.tokens == example["tokens"], example["index"]
        assert (enc.num_truncated > 0) == example["truncated"]
        real = example["num_real_tokens"]
        assert enc.type_ids == data["inputs"]["segment_ids"][example["index"]][:real]
