"""In-memory batches: epochs, ranks, resuming."""

from __future__ import annotations

import numpy as np
import pytest

from bertkit.errors import BertkitError
from bertkit.training.batches import ArrayBatches


def features(n: int = 10) -> dict[str, np.ndarray]:
    return {"input_ids": np.arange(n)[:, None].repeat(3, 1), "label": np.arange(n)}


def test_epochs_are_shuffled_permutations():
    b = ArrayBatches(features(), seed=1)
    first, second = b.next_batch(10)["label"], b.next_batch(10)["label"]
    assert sorted(first) == sorted(second) == list(range(10)) and list(first) != list(second)
    assert b.state_dict()["epoch"] == 2 and (b.next_batch(3)["input_ids"][:, 0] == b.epoch_order(2)[:3]).all()


def test_ranks_split_a_global_batch():
    one = ArrayBatches(features(11), seed=3)
    ranks = [ArrayBatches(features(11), seed=3, rank=r, world_size=2) for r in range(2)]
    global_batch = sorted(one.next_batch(4)["label"])
    assert sorted(np.concatenate([r.next_batch(2)["label"] for r in ranks])) == global_batch
    assert ranks[0].per_epoch == 5  # 11 examples: one left out each epoch, so ranks stay equal


def test_resume_continues_exactly():
    a = ArrayBatches(features(), seed=2)
    a.next_batch(7)
    b = ArrayBatches(features(), seed=2)
    b.load_state_dict(a.state_dict())
    assert (a.next_batch(6)["label"] == b.next_batch(6)["label"]).all()
    with pytest.raises(BertkitError, match="seed=2"):
        ArrayBatches(features(), seed=5).load_state_dict(a.state_dict())


def test_bad_features():
    with pytest.raises(BertkitError, match="different lengths"):
        ArrayBatches({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(BertkitError, match="cannot be shared"):
        ArrayBatches(features(1), world_size=2)
