"""TFRecord framing and tf.train.Example protos, against Google's own pretraining TFRecords."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from shared_data import require_shared

from bertkit.convert.sstable import crc32c, put_varint
from bertkit.data.tfrecord import (
    RecordWriter,
    crc32c_many,
    decode_example,
    encode_example,
    iter_records,
    read_examples,
    write_examples,
)
from bertkit.errors import BertkitError

RUNS = {"pretrain_wwm_false.tfrecord": "do_whole_word_mask=False", "pretrain_wwm_true.tfrecord": "do_whole_word_mask=True"}


def test_crc32c_many_matches_crc32c():
    rng = np.random.default_rng(0)
    buffers = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 7, 8, 63, 64, 65, 820, 821, 5000, 70000)]
    buffers += [rng.integers(0, 256, 800, dtype=np.uint8).tobytes() for _ in range(20)]
    assert crc32c_many(buffers).tolist() == [crc32c(b) for b in buffers]
    assert crc32c_many([b"123456789"]).tolist() == [0xE3069283]  # the standard check value


def test_example_roundtrip_kinds_and_values():
    example = {
        "ids": np.array([0, 1, 127, 128, 30521, 2**40, -1, -(2**63), 2**63 - 1]),
        "weights": np.array([1.0, 0.0, -2.5], dtype=np.float32),
        "label": [1],
        "flag": np.array([True, False]),
        "text": [b"abc", "d\u00e9"],
        "empty": [],
    }
    decoded = decode_example(encode_example(example, kinds={"empty": "float"}))
    assert list(decoded) == list(example)
    assert decoded["ids"].dtype == np.int64 and decoded["ids"].tolist() == example["ids"].tolist()
    assert decoded["weights"].dtype == np.float32 and decoded["weights"].tolist() == [1.0, 0.0, -2.5]
    assert decoded["label"].tolist() == [1] and decoded["flag"].tolist() == [1, 0]
    assert decoded["text"].tolist() == [b"abc", "d\u00e9".encode()]
    assert decoded["empty"].dtype == np.float32 and decoded["empty"].size == 0


def _field(out: bytearray, number: int, wire: int, payload: bytes | int) -> None:
    put_varint(out, number << 3 | wire)
    if wire == 0:
        put_varint(out, payload)
    elif wire == 2:
        put_varint(out, len(payload))
        out += payload
    else:
        out += payload


def _example_bytes(name: str, kind_field: int, list_message: bytes) -> bytes:
    feature, entry, features, example = bytearray(), bytearray(), bytearray(), bytearray()
    _field(feature, kind_field, 2, list_message)
    _field(entry, 1, 2, name.encode())
    _field(entry, 2, 2, bytes(feature))
    _field(features, 1, 2, bytes(entry))
    _field(example, 1, 2, bytes(features))
    return bytes(example)


def test_unpacked_and_mixed_repeated_fields_decode():
    ints = bytearray()
    for value in (5, 300, -7):
        _field(ints, 1, 0, value)
    packed = bytearray()
    put_varint(packed, 9)
    put_varint(packed, 1000)
    _field(ints, 1, 2, bytes(packed))  # a packed run after unpacked values: all concatenate
    floats = bytearray()
    for value in (0.5, -3.0):
        _field(floats, 1, 5, struct.pack("<f", value))
    assert decode_example(_example_bytes("i", 3, bytes(ints)))["i"].tolist() == [5, 300, -7, 9, 1000]
    assert decode_example(_example_bytes("f", 2, bytes(floats)))["f"].tolist() == [0.5, -3.0]


def test_write_read_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    examples = [
        {"input_ids": rng.integers(0, 30522, 128), "masked_lm_weights": rng.random(20).astype(np.float32), "n": [i]}
        for i in range(2500)  # several write batches
    ]
    path = tmp_path / "out.tfrecord"
    assert write_examples(path, examples) == 2500
    back = list(read_examples(path))
    assert len(back) == 2500
    for a, b in zip(examples, back):
        assert np.array_equal(a["input_ids"], b["input_ids"]) and np.array_equal(a["masked_lm_weights"], b["masked_lm_weights"])
        assert b["n"].tolist() == a["n"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.tfrecord"]


def test_writer_error_leaves_no_file(tmp_path):
    path = tmp_path / "bad.tfrecord"
    with pytest.raises(BertkitError, match=r"bad\.tfrecord: example 1: feature 'x' is empty"):
        write_examples(path, [{"x": [1]}, {"x": []}])
    with pytest.raises(RuntimeError):
        with RecordWriter(path) as writer:
            writer.write(b"abc")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def _three_records(tmp_path):
    path = tmp_path / "three.tfrecord"
    with RecordWriter(path) as writer:
        for data in (b"first", b"second record", b"third"):
            writer.write(data)
    return path


def test_iter_records_and_corruption(tmp_path):
    path = _three_records(tmp_path)
    assert list(iter_records(path)) == [b"first", b"second record", b"third"]
    data = bytearray(path.read_bytes())

    path.write_bytes(data[:-3])
    with pytest.raises(BertkitError, match=r"three\.tfrecord: truncated: record 2 \(at byte 50\) runs past"):
        list(iter_records(path))
    path.write_bytes(data[:-16])
    with pytest.raises(BertkitError, match=r"truncated: record 2 \(at byte 50\) has an incomplete header"):
        list(iter_records(path))

    corrupt = bytearray(data)
    corrupt[21 + 12 + 3] ^= 1  # a byte of the second record's data
    path.write_bytes(corrupt)
    with pytest.raises(BertkitError, match=r"corrupt: record 1 \(at byte 21\) has a bad data checksum"):
        list(iter_records(path))
    assert len(list(iter_records(path, verify=False))) == 3

    corrupt = bytearray(data)
    corrupt[21] ^= 1  # the second record's length
    path.write_bytes(corrupt)
    with pytest.raises(BertkitError, match=r"record 1 \(at byte 21\) has a bad length checksum"):
        list(iter_records(path))


def test_bad_inputs(tmp_path):
    with pytest.raises(BertkitError, match="cannot read: No such file or directory"):
        list(iter_records(tmp_path / "missing.tfrecord"))
    with pytest.raises(BertkitError, match="cannot read: Is a directory"):
        list(iter_records(tmp_path))
    path = tmp_path / "junk.tfrecord"
    with RecordWriter(path) as writer:
        writer.write(b"\x0a\x05\x0a\x03")  # features field claims 5 bytes, has 3
    with pytest.raises(BertkitError, match=r"junk\.tfrecord: record 0 is not a valid tf\.train\.Example"):
        list(read_examples(path))
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    assert list(read_examples(tmp_path / "empty.tfrecord")) == []


# ----------------------------------------------------------------------------------------------
# Google's create_pretraining_data.py output.


def _golden_columns(path) -> dict[str, np.ndarray]:
    examples = list(read_examples(path))
    return {name: np.stack([e[name] for e in examples]) for name in examples[0]}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(RUNS))
def test_google_tfrecords_match_stats(name):
    folder = require_shared("golden", "google", "dev", "pretraining_data")
    stats = json.loads((folder / "stats.json").read_text())["runs"][RUNS[name]]
    cols = _golden_columns(folder / name)
    n = stats["num_instances"]
    widths = {"input_ids": 128, "input_mask": 128, "segment_ids": 128, "masked_lm_positions": 20,
              "masked_lm_ids": 20, "masked_lm_weights": 20, "next_sentence_labels": 1}
    assert {k: v.shape for k, v in cols.items()} == {k: (n, w) for k, w in widths.items()}
    assert cols["masked_lm_weights"].dtype == np.float32 and cols["input_ids"].dtype == np.int64

    real = cols["input_mask"].sum(axis=1)
    assert (real.min(), real.max(), real.mean()) == (stats["real_length"]["min"], stats["real_length"]["max"], stats["real_length"]["mean"])
    lengths, counts = np.unique(real, return_counts=True)
    assert {str(k): int(c) for k, c in zip(lengths, counts)} == stats["real_length"]["histogram_exact"]
    segment_b = cols["segment_ids"].sum(axis=1) - 1  # B and its [SEP] are 1
    assert (real - 3 - segment_b).mean() == pytest.approx(stats["segment_a_tokens_mean"], rel=1e-12)
    assert segment_b.mean() == pytest.approx(stats["segment_b_tokens_mean"], rel=1e-12)
    assert int(cols["next_sentence_labels"].sum()) == stats["is_random_next_count"]

    masked = stats["masked_positions"]
    weights = cols["masked_lm_weights"]
    assert weights.sum() == masked["total"] and weights.sum(axis=1).max() == masked["max_per_instance"]
    real_slots = weights > 0
    at = np.take_along_axis(cols["input_ids"], cols["masked_lm_positions"], axis=1)[real_slots]
    labels = cols["masked_lm_ids"][real_slots]
    kinds = {"mask": int((at == 103).sum()), "kept": int(((at == labels) & (at != 103)).sum())}
    kinds["random"] = int(real_slots.sum()) - kinds["mask"] - kinds["kept"]
    assert kinds == masked["counts"]


@pytest.mark.shared
def test_google_tfrecord_rewrites_identically(tmp_path):
    source = require_shared("golden", "google", "dev", "pretraining_data", "pretrain_wwm_false.tfrecord")
    examples = list(read_examples(source))
    path = tmp_path / "copy.tfrecord"
    assert write_examples(path, examples) == 3326
    assert os.path.getsize(path) == os.path.getsize(source)  # same encoding, feature order aside
    for a, b in zip(examples, read_examples(path)):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
