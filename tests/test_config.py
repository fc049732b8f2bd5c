"""BertConfig: Google's and HF's JSON, presets, activations, bad configs."""

from __future__ import annotations

import json

import pytest

from bertkit.config import BertConfig, normalize_activation, parameter_count, preset, preset_names
from bertkit.errors import BertkitError

GOOGLE_BASE = {
    "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12,
    "type_vocab_size": 2, "vocab_size": 30522,
}


def test_google_config_round_trip(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(GOOGLE_BASE))
    config = BertConfig.from_json_file(path)
    assert config.hidden_act == "gelu" and config.head_size == 64
    config.to_json_file(tmp_path / "out.json", flavour="google")
    assert json.loads((tmp_path / "out.json").read_text()) == GOOGLE_BASE


def test_hf_config_activations_and_labels():
    data = {**GOOGLE_BASE, "hidden_act": "gelu_new", "id2label": {"0": "neg", "1": "pos"},
            "model_type": "bert", "layer_norm_eps": 1e-7}
    config = BertConfig.from_dict(data)
    assert config.hidden_act == "gelu_tanh"
    assert config.label_names == ["neg", "pos"] and config.num_labels == 2
    assert config.layer_norm_eps == 1e-7
    hf = config.to_hf_dict("BertForSequenceClassification")
    assert hf["hidden_act"] == "gelu_new" and hf["id2label"] == {"0": "neg", "1": "pos"}
    assert BertConfig.from_dict(hf) == config.replace(extra=BertConfig.from_dict(hf).extra)


def test_generic_hf_label_names_are_not_kept():
    config = BertConfig.from_dict({**GOOGLE_BASE, "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}})
    assert config.label_names is None and config.num_labels == 3


def test_bertkit_dict_round_trip():
    config = BertConfig(**{**GOOGLE_BASE, "hidden_act": "gelu_tanh"}, label_names=["a", "b", "c"], do_lower_case=False)
    again = BertConfig.from_dict(config.to_dict())
    assert again == config


@pytest.mark.parametrize("name", preset_names())
def test_presets_are_valid(name):
    config = preset(name)
    assert config.hidden_size % config.num_attention_heads == 0
    assert config.intermediate_size == 4 * config.hidden_size


def test_preset_sizes():
    assert len([n for n in preset_names() if n.startswith("L-")]) == 24
    assert parameter_count(preset("base")) == 109_482_240  # BERT-base encoder with pooler
    assert parameter_count(preset("large")) == 335_141_888
    small = preset("L-4_H-256")
    assert (small.num_hidden_layers, small.hidden_size, small.num_attention_heads) == (4, 256, 4)
    assert preset("mini") == small
    with pytest.raises(BertkitError, match="unknown model preset"):
        preset("L-3_H-256")


def test_activation_names():
    assert normalize_activation("gelu") == "gelu"
    assert normalize_activation("gelu_pytorch_tanh") == "gelu_tanh"
    with pytest.raises(BertkitError, match="unknown activation"):
        normalize_activation("gelu_fancy")


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({k: v for k, v in GOOGLE_BASE.items() if k != "hidden_size"}), "missing required key 'hidden_size'"),
    (json.dumps({**GOOGLE_BASE, "hidden_act": "swishy"}), "unknown activation"),
    (json.dumps({**GOOGLE_BASE, "num_attention_heads": 7}), "not a multiple"),
])
def test_bad_configs_name_the_file(tmp_path, text, message):
    path = tmp_path / "bert_config.json"
    path.write_text(text)
    with pytest.raises(BertkitError, match=message) as info:
        BertConfig.from_json_file(path)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(BertkitError, match="not found"):
        BertConfig.from_json_file(tmp_path / "nope.json")


def test_replace_rejects_unknown_fields():
    with pytest.raises(BertkitError, match="unknown config field"):
        BertConfig().replace(hiden_act="gelu")
