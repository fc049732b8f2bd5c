"""PretrainingDataset: random access, global shuffle, rank shares, resumable iteration, vocab checks."""

from __future__ import annotations

import numpy as np
import pytest
from pretrain_fixtures import vocab_dict, write_corpus, write_vocab

from bertkit.data.create import CreateConfig, create_pretraining_data
from bertkit.data.dataset import Permutation, PretrainingDataset, vocab_checksum
from bertkit.data.tfrecord import write_examples
from bertkit.errors import BertkitError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> PretrainingDataset:
    tmp = tmp_path_factory.mktemp("data")
    write_corpus(tmp, files=1, documents=30)
    config = CreateConfig(max_seq_length=24, max_predictions_per_seq=4, dupe_factor=2, seed=3)
    create_pretraining_data(str(tmp / "corpus-0.txt"), write_vocab(tmp), tmp / "out", config, lower_case=True)
    return PretrainingDataset(tmp / "out")


def test_items_are_padded_numpy_arrays(dataset):
    item = dataset[0]
    shapes = {k: (v.shape, v.dtype.name) for k, v in item.items()}
    assert shapes == {"input_ids": ((24,), "int64"), "token_type_ids": ((24,), "int64"),
                      "attention_mask": ((24,), "int64"), "masked_lm_positions": ((4,), "int64"),
                      "masked_lm_ids": ((4,), "int64"), "masked_lm_weights": ((4,), "float32"),
                      "next_sentence_labels": ((), "int64")}
    assert dataset.max_seq_length == 24 and dataset.max_predictions == 4
    last = dataset[len(dataset) - 1]
    assert all(np.array_equal(last[k], dataset[-1][k]) for k in last)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_batches_equal_single_items_in_any_order(dataset):
    idx = np.array([7, 0, len(dataset) - 1, 7, 3])
    batch = dataset.get_batch(idx)
    for row, i in enumerate(idx):
        assert all(np.array_equal(batch[k][row], dataset[int(i)][k]) for k in batch)


def test_order_is_a_seeded_permutation(dataset):
    n = len(dataset)
    order = dataset.order(seed=1, epoch=0)
    assert sorted(order.tolist()) == list(range(n))
    assert np.array_equal(order, dataset.order(seed=1, epoch=0))
    assert not np.array_equal(order, dataset.order(seed=1, epoch=1))
    assert not np.array_equal(order, dataset.order(seed=2, epoch=0))
    for size in (1, 2, 5, 1000, 4097):
        assert sorted(Permutation(size, 9)(np.arange(size)).tolist()) == list(range(size))


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_rank_shares_are_disjoint_and_equal(dataset, world_size):
    shares = [dataset.share(seed=5, epoch=2, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(dataset) // world_size
    union = np.concatenate(shares)
    assert len(np.unique(union)) == len(union)
    usable = len(dataset) - len(dataset) % world_size
    assert sorted(union.tolist()) == sorted(dataset.order(5, 2)[:usable].tolist())


def test_iterator_resumes_exactly_across_epochs(dataset):
    it = dataset.iterate(seed=4, rank=1, world_size=2)
    per_epoch = len(dataset) // 2
    for _ in range(per_epoch - 3):
        next(it)
    state = it.state_dict()
    assert state == {"seed": 4, "rank": 1, "world_size": 2, "num_instances": len(dataset), "epoch": 0,
                     "offset": per_epoch - 3}
    expected = [next(it) for _ in range(6)]  # crosses into epoch 1
    resumed = dataset.iterate(seed=4, rank=1, world_size=2)
    resumed.load_state_dict(state)
    got = [next(resumed) for _ in range(6)]
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(expected, got) for k in a)
    assert resumed.state_dict()["epoch"] == 1
    share = dataset.share(seed=4, epoch=1, rank=1, world_size=2)
    assert np.array_equal(got[3]["input_ids"], dataset[int(share[0])]["input_ids"])


def test_iterator_batches_and_stops_after_its_epochs(dataset):
    it = dataset.iterate(seed=0, epochs=1)
    batches = []
    while True:
        try:
            batches.append(it.next_batch(16))
        except StopIteration:
            break
    assert sum(len(b["input_ids"]) for b in batches) == len(dataset)
    with pytest.raises(BertkitError, match="cannot resume"):
        dataset.iterate(seed=1).load_state_dict(it.state_dict())


def test_vocab_checks(dataset):
    assert dataset.vocab_sha256 == vocab_checksum(vocab_dict())
    dataset.check_vocab(len(vocab_dict()), vocab_dict())
    with pytest.raises(BertkitError, match="another vocabulary"):
        dataset.check_vocab(100, {**vocab_dict(), "extra": 21})
    with pytest.raises(BertkitError, match="outside the model's vocabulary"):
        dataset.check_vocab(5)


def test_reads_tfrecord_files_by_path_directory_or_glob(dataset, tmp_path):
    batch = dataset.get_batch(np.arange(10))
    records = [{"input_ids": batch["input_ids"][i], "input_mask": batch["attention_mask"][i],
                "segment_ids": batch["token_type_ids"][i], "masked_lm_positions": batch["masked_lm_positions"][i],
                "masked_lm_ids": batch["masked_lm_ids"][i], "masked_lm_weights": batch["masked_lm_weights"][i],
                "next_sentence_labels": [int(batch["next_sentence_labels"][i])]} for i in range(10)]
    write_examples(tmp_path / "a.tfrecord", records[:4])
    write_examples(tmp_path / "b.tfrecord", records[4:])
    for path in (tmp_path, str(tmp_path / "*.tfrecord"), [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"]):
        tf = PretrainingDataset(path)
        assert len(tf) == 10 and tf.vocab_size is None and tf.max_token_id == int(batch["input_ids"].max())
        got = tf.get_batch(np.arange(10))
        assert all(np.array_equal(got[k], batch[k]) for k in batch)
    (tmp_path / "c.tfrecord").write_bytes(b"not a tfrecord file")
    with pytest.raises(BertkitError, match="c.tfrecord"):
        PretrainingDataset(tmp_path)
    with pytest.raises(BertkitError, match="no bertkit manifest.json and no TFRecord"):
        PretrainingDataset(tmp_path / "missing")


def test_pickles_for_dataloader_workers(dataset):
    import pickle

    copy = pickle.loads(pickle.dumps(dataset))
    assert len(copy) == len(dataset) and np.array_equal(copy[9]["input_ids"], dataset[9]["input_ids"])


def test_damaged_shards_are_reported(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset.path, copy)
    shard = next(copy.glob("shard-*.bin"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(BertkitError, match="incomplete or corrupt shard"):
        PretrainingDataset(copy)
