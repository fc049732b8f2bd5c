"""Checkpoint formats: HF in and out (transformers loads our export unchanged), bertkit's own
format, Google's TF format, strict name/shape checks and the errors users see."""

from __future__ import annotations

import json

import pytest
import torch

from bertkit import BertConfig, build_model, export_google, export_hf, load_model, read_checkpoint, save_bertkit
from bertkit.convert.checkpoint import canonical_state, detect_format
from bertkit.convert.load import empty_model, load_tensors
from bertkit.errors import BertkitError

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=24, max_position_embeddings=32, initializer_range=0.2)
HF_CLASSES = {None: "BertModel", "pretraining": "BertForPreTraining",
              "classification": "BertForSequenceClassification",
              "token_classification": "BertForTokenClassification", "qa": "BertForQuestionAnswering"}


def inputs():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, TINY["vocab_size"], (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, torch.zeros_like(ids), mask


# bertkit output field -> transformers output field
FIELD_PAIRS = {"last_hidden_state": "last_hidden_state", "pooled_output": "pooler_output",
               "mlm_logits": "prediction_logits", "nsp_logits": "seq_relationship_logits",
               "logits": "logits", "start_logits": "start_logits", "end_logits": "end_logits"}


def outputs_of(out) -> list[torch.Tensor]:
    return [getattr(out, f) for f in FIELD_PAIRS if getattr(out, f) is not None]


def assert_same_outputs(ours, theirs, mask=None) -> int:
    """Compare every field both computed, token-level fields at the real tokens of ``mask`` (B, T)
    only (bertkit's unpadded path leaves zeros at padding); returns how many were compared."""
    compared = 0
    for mine, hf_name in FIELD_PAIRS.items():
        a, b = getattr(ours, mine), getattr(theirs, hf_name, None)
        if a is not None and b is not None:
            if mask is not None and a.dim() >= 2 and a.shape[:2] == mask.shape:
                a, b = a[mask.bool()], b[mask.bool()]
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
            compared += 1
    return compared


def random_model(head, num_labels=3):
    torch.manual_seed(0)
    model = build_model(BertConfig(**TINY, num_labels=num_labels), head).eval()
    with torch.no_grad():  # random biases and LayerNorms, so nothing can hide behind zeros/ones
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def write_vocab(directory, size=TINY["vocab_size"]):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(size - 5)]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    return directory / "vocab.txt"


@pytest.mark.parametrize("head", list(HF_CLASSES))
def test_export_hf_loads_unchanged_in_transformers(tmp_path, head):
    model = random_model(head)
    export_hf(model, tmp_path / "hf", write_vocab(tmp_path), do_lower_case=True)
    hf, info = getattr(transformers, HF_CLASSES[head]).from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, types, mask = inputs()
    with torch.no_grad():
        ours = model(ids, types, mask)
        theirs = hf.eval()(input_ids=ids, token_type_ids=types, attention_mask=mask)
    assert assert_same_outputs(ours, theirs, mask) == (2 if head in (None, "pretraining", "qa") else 1)
    assert detect_format(tmp_path / "hf") == "hf"


@pytest.mark.parametrize("safe", [True, False])
def test_load_hf_saved_by_transformers(tmp_path, safe):
    config = transformers.BertConfig(**TINY)
    torch.manual_seed(1)
    hf = transformers.BertForPreTraining(config).eval()
    hf.save_pretrained(tmp_path)
    if not safe:  # an older transformers' pickle layout
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
        (tmp_path / "model.safetensors").unlink()
    ours = load_model(tmp_path, head="pretraining")
    ids, types, mask = inputs()
    with torch.no_grad():
        a = ours(ids, types, mask)
        b = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()  # the unpadded path leaves padding positions at zero hidden state
    torch.testing.assert_close(a.mlm_logits[real], b.prediction_logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.nsp_logits, b.seq_relationship_logits, atol=1e-5, rtol=0)
    # The same file as a bare encoder: the heads are ignored, and reported.
    bare = load_model(tmp_path)
    assert "cls.predictions.bias" in bare.load_info.ignored


def test_legacy_gamma_beta_names(tmp_path):
    model = random_model(None)
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(BertConfig(**TINY).to_hf_dict()))
    loaded = load_model(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("head", list(HF_CLASSES))
def test_bertkit_format_round_trip(tmp_path, head):
    model = random_model(head)
    save_bertkit(model, tmp_path / "ck", write_vocab(tmp_path), do_lower_case=False)
    assert detect_format(tmp_path / "ck") == "bertkit"
    loaded = load_model(tmp_path / "ck", head=head)
    assert loaded.config.do_lower_case is False
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    ids, types, mask = inputs()
    for a, b in zip(outputs_of(model(ids, types, mask)), outputs_of(loaded(ids, types, mask))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("head", ["pretraining", "classification", "qa"])
def test_google_format_round_trip(tmp_path, head):
    model = random_model(head)
    export_google(model, tmp_path / "tf", write_vocab(tmp_path))
    assert detect_format(tmp_path / "tf") == "google"
    ckpt = read_checkpoint(tmp_path / "tf")
    assert ckpt.heads() == [head]
    loaded = load_model(tmp_path / "tf", head=head)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_head_created_only_when_asked(tmp_path):
    save_bertkit(random_model(None), tmp_path)
    with pytest.raises(BertkitError, match=r"missing tensors: classifier\.bias, classifier\.weight.*init_head"):
        load_model(tmp_path, head="classification", num_labels=4)
    model = load_model(tmp_path, head="classification", num_labels=4, init_head=True)
    assert model.classifier.weight.shape == (4, TINY["hidden_size"])
    assert sorted(model.load_info.created) == ["classifier.bias", "classifier.weight"]
    # drawn as Google's initializer draws a new head: truncated normal within 2σ, zero bias
    std, w = TINY["initializer_range"], model.classifier.weight
    assert w.abs().max() <= 2 * std and 0.4 * std < w.std() < 1.2 * std
    assert torch.equal(model.classifier.bias, torch.zeros(4))


def test_a_new_pretraining_head_is_drawn_and_tied(tmp_path):
    """load_model lays the model out without random draws: the tie between the MLM decoder and the
    word embeddings must survive, and every head tensor the checkpoint lacks must be drawn."""
    body = random_model(None)
    save_bertkit(body, tmp_path)
    model = load_model(tmp_path, head="pretraining", init_head=True)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, body.embeddings.word_embeddings.weight)
    assert torch.equal(model.cls.predictions.bias, torch.zeros(TINY["vocab_size"]))
    assert torch.equal(model.cls.predictions.transform.LayerNorm.weight, torch.ones(TINY["hidden_size"]))
    assert 0 < model.cls.seq_relationship.weight.abs().max() <= 2 * TINY["initializer_range"]
    # a head tensor the checkpoint has is kept over its module's draw
    full = random_model("pretraining")
    state = {k: v for k, v in canonical_state(full).items() if k != "cls.seq_relationship.weight"}
    model = empty_model(full.config, "pretraining")
    load_tensors(model, state, "pretraining", init_head=True)
    assert torch.equal(model.cls.seq_relationship.bias, full.cls.seq_relationship.bias)
    assert not torch.equal(model.cls.seq_relationship.weight, full.cls.seq_relationship.weight)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    ids, types, mask = inputs()
    torch.testing.assert_close(model.eval()(ids, types, mask).mlm_logits, full(ids, types, mask).mlm_logits)


def test_label_count_comes_from_the_head_and_a_mismatch_is_refused(tmp_path):
    export_google(random_model("classification", num_labels=3), tmp_path)
    assert load_model(tmp_path, head="classification").config.num_labels == 3
    with pytest.raises(BertkitError, match="classifier.weight is \\[3, 16\\], model expects \\[2, 16\\].*label set"):
        load_model(tmp_path, head="classification", num_labels=2)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    model = random_model(None)
    state = {k: v for k, v in model.state_dict().items() if "layer.1.output.dense" not in k}
    state["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(BertConfig(**TINY).to_hf_dict()))
    with pytest.raises(BertkitError, match="unexpected tensors.*rotary"):
        load_model(tmp_path)
    del state["encoder.layer.0.attention.self.rotary.weight"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(BertkitError, match=r"missing tensors: bert\.encoder\.layer\.1\.output\.dense\.bias"):
        load_model(tmp_path)


def test_vocab_larger_than_embeddings_is_refused(tmp_path):
    save_bertkit(random_model(None), tmp_path, write_vocab(tmp_path, size=TINY["vocab_size"] + 10))
    with pytest.raises(BertkitError, match="vocab.txt: has 60 entries but the word embedding matrix has 50 rows"):
        load_model(tmp_path)


def test_config_overrides(tmp_path):
    save_bertkit(random_model(None), tmp_path)
    model = load_model(tmp_path, hidden_act="gelu_tanh")
    assert model.config.hidden_act == "gelu_tanh"
    with pytest.raises(BertkitError, match="unknown activation"):
        load_model(tmp_path, hidden_act="nope")


def test_directory_without_checkpoint(tmp_path):
    with pytest.raises(BertkitError, match="holds no checkpoint"):
        load_model(tmp_path)
    with pytest.raises(BertkitError, match="no such file"):
        load_model(tmp_path / "missing")


def test_corrupt_safetensors(tmp_path):
    save_bertkit(random_model(None), tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BertkitError, match="model.safetensors: cannot read weights"):
        load_model(tmp_path)
