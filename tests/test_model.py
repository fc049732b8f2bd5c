"""Model parity with transformers (a reference nobody here wrote): every head, small random weights."""

from __future__ import annotations

import math

import pytest
import torch

from bertkit.attention import relative_position_table
from bertkit.config import BertConfig
from bertkit.convert.checkpoint import canonical_state
from bertkit.convert.keymaps import hf_to_canonical
from bertkit.convert.load import load_tensors
from bertkit.model import build_model

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
            initializer_range=0.2)  # large weights: the two GELUs then differ visibly


def hf_model(cls_name: str, hidden_act: str = "gelu", num_labels: int = 2):
    config = transformers.BertConfig(**TINY, hidden_act=hidden_act, num_labels=num_labels,
                                     attn_implementation="sdpa")
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config).eval()
    # Random biases and LayerNorm parameters too, so a swapped or dropped one cannot hide.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("LayerNorm.weight") else 0.0))
    return model


def bertkit_from_hf(hf, head, hidden_act: str = "gelu", num_labels: int = 2):
    config = BertConfig(**TINY, hidden_act=hidden_act, num_labels=num_labels)
    model = build_model(config, head).eval()
    tensors = {}
    for name, t in hf.state_dict().items():
        canonical = hf_to_canonical(name)
        if canonical is not None:
            tensors[canonical] = t
    load_tensors(model, tensors, head)
    return model


def batch(seed: int = 1, B: int = 3, T: int = 17):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY["vocab_size"], (B, T), generator=g)
    types = torch.randint(0, 2, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1:, 11:] = 0  # padded rows
    mask[2:, 5:] = 0
    return ids, types, mask


def assert_close(a, b, tol=1e-5):
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff < tol, f"max |diff| {diff}"


@pytest.mark.parametrize("unpad", [True, False], ids=["unpadded", "padded"])
@pytest.mark.parametrize("act,hf_act", [("gelu", "gelu"), ("gelu_tanh", "gelu_new")])
def test_encoder_matches_transformers(act, hf_act, unpad):
    """The unpadded fast path at real tokens (zeros at padding); the padded path everywhere."""
    hf = hf_model("BertModel", hf_act)
    ours = bertkit_from_hf(hf, None, act)
    ours.unpad = unpad
    ids, types, mask = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
        out = ours(ids, types, mask, output_hidden_states=True)
    real = mask.bool() if unpad else torch.ones_like(mask, dtype=torch.bool)
    assert len(out.hidden_states) == TINY["num_hidden_layers"] + 1
    for h_ref, h in zip(ref.hidden_states, out.hidden_states):
        assert_close(h[real], h_ref[real])
        assert not h[~real].any()
    assert_close(out.last_hidden_state[real], ref.last_hidden_state[real])
    assert_close(out.pooled_output, ref.pooler_output)


def test_gelu_eras_differ():
    hf = hf_model("BertModel")
    ids, types, mask = batch()
    erf = bertkit_from_hf(hf, None, "gelu")(ids, types, mask).last_hidden_state
    tanh = bertkit_from_hf(hf, None, "gelu_tanh")(ids, types, mask).last_hidden_state
    assert (erf - tanh).abs().max() > 1e-5  # the parity test above can tell them apart


def test_pretraining_head_matches_transformers():
    hf = hf_model("BertForPreTraining")
    ours = bertkit_from_hf(hf, "pretraining")
    ids, types, mask = batch()
    positions = torch.tensor([[1, 4, 0], [2, 3, 10], [1, 2, 4]])
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
        out = ours(ids, types, mask, masked_lm_positions=positions)
        full = ours(ids, types, mask)
    gathered = torch.gather(ref.prediction_logits, 1, positions[:, :, None].expand(-1, -1, TINY["vocab_size"]))
    assert_close(out.mlm_logits, gathered)
    assert_close(full.mlm_logits[mask.bool()], ref.prediction_logits[mask.bool()])
    assert_close(out.nsp_logits, ref.seq_relationship_logits)
    flat = torch.tensor([1, 17 + 3, 17 + 10, 34 + 4])  # flat positions b·T + t: (0, 1), (1, 3), (1, 10), (2, 4)
    with torch.no_grad():
        assert_close(ours(ids, types, mask, masked_lm_positions=flat).mlm_logits, gathered[[0, 1, 1, 2], [0, 1, 2, 2]])
    # The decoder is tied to the word embeddings.
    assert ours.cls.predictions.decoder.weight.data_ptr() == ours.bert.embeddings.word_embeddings.weight.data_ptr()


def test_mlm_logits_under_autocast_stay_bfloat16():
    """The decoder's bias is added inside its product (as transformers does), so autocast keeps the
    (B, P, V) logits in bfloat16 instead of promoting them to float32 by a separate float32 add."""
    hf = hf_model("BertForPreTraining")
    ours = bertkit_from_hf(hf, "pretraining")
    ids, types, mask = batch()
    positions = torch.tensor([[1, 4, 0], [2, 3, 10], [1, 2, 4]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(ids, types, mask, masked_lm_positions=positions)
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    gathered = torch.gather(ref.prediction_logits, 1, positions[:, :, None].expand(-1, -1, TINY["vocab_size"]))
    assert out.mlm_logits.dtype == torch.bfloat16
    assert_close(out.mlm_logits.float(), gathered.float(), tol=0.1)


@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_matches_transformers(num_labels):
    hf = hf_model("BertForSequenceClassification", num_labels=num_labels)
    ours = bertkit_from_hf(hf, "classification", num_labels=num_labels)
    ids, types, mask = batch()
    with torch.no_grad():
        assert_close(ours(ids, types, mask).logits, hf(input_ids=ids, token_type_ids=types, attention_mask=mask).logits)


def test_token_classification_matches_transformers():
    hf = hf_model("BertForTokenClassification", num_labels=5)
    ours = bertkit_from_hf(hf, "token_classification", num_labels=5)
    ids, types, mask = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
        out = ours(ids, types, mask).logits
    assert_close(out[mask.bool()], ref[mask.bool()])


def test_qa_matches_transformers():
    hf = hf_model("BertForQuestionAnswering")
    ours = bertkit_from_hf(hf, "qa")
    ids, types, mask = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
        out = ours(ids, types, mask, output_hidden_states=True)
    assert_close(out.start_logits[mask.bool()], ref.start_logits[mask.bool()])
    assert_close(out.end_logits[mask.bool()], ref.end_logits[mask.bool()])


def test_padding_does_not_change_real_tokens():
    model = build_model(BertConfig(**TINY)).eval()
    ids, types, _ = batch(B=1, T=9)
    short = model(ids, types).last_hidden_state
    padded_ids = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    padded_types = torch.cat([types, torch.zeros(1, 6, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 6)], 1).long()
    long = model(padded_ids, padded_types, mask).last_hidden_state
    assert_close(long[:, :9], short)


def test_training_mode_uses_dropout_and_backprops():
    model = build_model(BertConfig(**TINY), "classification").train()
    ids, types, mask = batch()
    a, b = model(ids, types, mask).logits, model(ids, types, mask).logits
    assert (a - b).abs().max() > 0  # dropout is active
    a.sum().backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def test_init_is_google_truncated_normal():
    model = build_model(BertConfig(**{**TINY, "initializer_range": 0.05}))
    w = model.encoder.layer[0].intermediate.dense.weight
    assert w.abs().max() <= 0.1 + 1e-6  # truncated at 2σ
    assert 0.03 < w.std().item() < 0.05
    assert torch.all(model.encoder.layer[0].output.LayerNorm.weight == 1)


# --- NEZHA relative positions: checked against a direct float64 implementation -------------


def nezha_reference(model, ids, types, mask):
    """Textbook NEZHA attention in float64, written from the paper's equations."""
    c = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    x = sd["embeddings.word_embeddings.weight"][ids] + sd["embeddings.token_type_embeddings.weight"][types]

    def ln(x, p):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + c.layer_norm_eps) * sd[p + ".weight"] + sd[p + ".bias"]

    def lin(x, p):
        return x @ sd[p + ".weight"].T + sd[p + ".bias"]

    x = ln(x, "embeddings.LayerNorm")
    B, T, H = x.shape
    nh, hs = c.num_attention_heads, c.head_size
    rel = torch.zeros(T, T, hs, dtype=torch.float64)
    for i in range(T):
        for j in range(T):
            d = max(-c.max_relative_position, min(c.max_relative_position, j - i)) + c.max_relative_position
            for k in range(hs):
                angle = d / (10000 ** ((k - k % 2) / hs))
                rel[i, j, k] = math.sin(angle) if k % 2 == 0 else math.cos(angle)
    for n in range(c.num_hidden_layers):
        p = f"encoder.layer.{n}."
        q, k, v = (lin(x, p + f"attention.self.{w}").view(B, T, nh, hs).transpose(1, 2) for w in ("query", "key", "value"))
        scores = (q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, rel)) / math.sqrt(hs)
        scores = scores + (1 - mask[:, None, None, :].double()) * -1e9
        probs = scores.softmax(-1)
        ctx = (probs @ v + torch.einsum("bhij,ijd->bhid", probs, rel)).transpose(1, 2).reshape(B, T, H)
        x = ln(lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        inter = torch.nn.functional.gelu(lin(x, p + "intermediate.dense"))
        x = ln(lin(inter, p + "output.dense") + x, p + "output.LayerNorm")
    return x


def test_nezha_relative_positions():
    config = BertConfig(**TINY, use_relative_positions=True, max_relative_position=4)
    torch.manual_seed(3)
    model = build_model(config).eval()
    assert model.embeddings.position_embeddings is None
    ids, types, mask = batch(T=11)
    out = model(ids, types, mask).last_hidden_state
    ref = nezha_reference(model, ids, types, mask)
    assert_close(out[mask.bool()].double(), ref[mask.bool()], tol=1e-5)
    table = relative_position_table(11, 8, 4)
    assert table.shape == (11, 11, 8)
    assert torch.equal(table[0, 9], table[0, 10])  # clipped beyond max distance


def test_canonical_state_names_follow_checkpoint_keys():
    model = build_model(BertConfig(**TINY), "pretraining")
    names = set(canonical_state(model))
    assert "bert.encoder.layer.2.attention.self.query.weight" in names
    assert "cls.predictions.bias" in names and "cls.predictions.decoder.weight" not in names
    bare = set(canonical_state(build_model(BertConfig(**TINY))))
    assert all(n.startswith("bert.") for n in bare)


def test_encoder_compiles_without_graph_breaks():
    """torch.compile (pretrain --compile) sees one graph: no data-dependent branch on the mask."""
    model = build_model(BertConfig(**TINY)).eval()
    ids, types, mask = batch()
    explained = torch._dynamo.explain(model)(ids, types, mask)
    assert explained.graph_break_count == 0
