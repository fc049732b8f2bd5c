"""Fixtures for the training loop: tiny learnable pretraining instances in memory, a tiny BERT config."""

from __future__ import annotations

import numpy as np
import pytest
from torch_threads import one_thread  # noqa: F401  (autouse)

from bertkit.config import BertConfig

PAD, CLS, SEP, MASK = 0, 1, 2, 3


def make_instances(n: int, seq: int = 16, preds: int = 3, vocab: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Pretraining instances that a tiny model learns from quickly: each segment draws from one of 6
    topics, and tokens are Zipf-distributed within a topic.

    Segment B has A's topic (label 0) or another one (label 1); some sequences are padded; the
    last prediction slot of every fourth instance is a padding slot (weight 0).
    """
    rng = np.random.default_rng(seed)
    topics, per_topic = 6, (vocab - 4) // 6
    zipf = 1.0 / np.arange(1, per_topic + 1) ** 2
    zipf /= zipf.sum()
    lengths = rng.integers(seq - 4, seq + 1, n)
    labels = rng.integers(0, 2, n)
    out = {k: np.zeros((n, seq), np.int64) for k in ("input_ids", "token_type_ids", "attention_mask")}
    out |= {"masked_lm_positions": np.zeros((n, preds), np.int64), "masked_lm_ids": np.zeros((n, preds), np.int64),
            "masked_lm_weights": np.ones((n, preds), np.float32), "next_sentence_labels": labels.astype(np.int64)}
    for i, length in enumerate(lengths):
        half = (length - 2) // 2
        a = rng.integers(0, topics)
        b = a if labels[i] == 0 else (a + rng.integers(1, topics)) % topics
        topic = np.where(np.arange(length - 2) < half, a, b)
        ids = np.concatenate([[CLS], 4 + topic * per_topic + rng.choice(per_topic, length - 2, p=zipf), [SEP]])
        out["token_type_ids"][i, half + 1:length] = 1
        out["attention_mask"][i, :length] = 1
        positions = np.sort(rng.choice(np.arange(1, length - 1), preds, replace=False))
        out["masked_lm_positions"][i], out["masked_lm_ids"][i] = positions, ids[positions]
        ids[positions] = MASK
        out["input_ids"][i, :length] = ids
        if i % 4 == 3:
            out["masked_lm_positions"][i, -1] = out["masked_lm_ids"][i, -1] = 0
            out["masked_lm_weights"][i, -1] = 0.0
    return out


def tiny_config(dropout: float = 0.1, vocab: int = 40) -> BertConfig:
    return BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)


@pytest.fixture
def instances() -> dict[str, np.ndarray]:
    return make_instances(256)


@pytest.fixture
def batches_factory():
    from bertkit.training.batches import ArrayBatches

    return ArrayBatches


@pytest.fixture
def config_factory():
    return tiny_config
