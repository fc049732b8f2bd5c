"""TF V2 checkpoints without TensorFlow: Google's real checkpoint, round trips, the SSTable and
crc32c underneath, finding the checkpoint in a directory, and the errors users see."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from bertkit.convert import sstable, tf_bundle
from bertkit.convert.sstable import BLOCK_SIZE, crc32c, encode_table, mask_crc32c, read_table
from bertkit.convert.tf_bundle import (
    find_tf_checkpoint,
    list_tf_variables,
    read_tf_checkpoint,
    write_tf_checkpoint,
)
from bertkit.errors import BertkitError
from shared_data import require_shared

GOLDEN_PARAMETERS = 4_433_468


def golden_prefix() -> Path:
    return require_shared("golden", "google", "dev", "model") / "bert_model.ckpt"


@lru_cache(maxsize=1)
def golden_json() -> dict:
    path = require_shared("golden", "google", "dev", "model", "golden.json")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Google's checkpoint, written by TensorFlow


def test_golden_names_shapes_and_parameter_count():
    variables = list_tf_variables(golden_prefix())
    expected = {name: tuple(shape) for name, shape in golden_json()["checkpoint_variables"]}
    assert len(variables) == 46
    assert {name: shape for name, (_, shape) in variables.items()} == expected
    assert {dtype for dtype, _ in variables.values()} == {"float32"}
    assert list(variables) == sorted(variables, key=lambda n: n.encode())  # file order
    assert sum(int(np.prod(shape)) for _, shape in variables.values()) == GOLDEN_PARAMETERS


def test_golden_values_give_googles_embedding_output():
    w = read_tf_checkpoint(golden_prefix())
    assert sum(a.size for a in w.values()) == GOLDEN_PARAMETERS
    assert all(a.dtype == np.float32 for a in w.values())
    inputs = golden_json()["inputs"]
    ids, segments = np.array(inputs["input_ids"][0]), np.array(inputs["segment_ids"][0])
    e = "bert/embeddings/"
    x = (w[e + "word_embeddings"][ids] + w[e + "token_type_embeddings"][segments]
         + w[e + "position_embeddings"][: len(ids)]).astype(np.float64)  # (T, H)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    out = (x - mean) / np.sqrt(var + 1e-12) * w[e + "LayerNorm/gamma"] + w[e + "LayerNorm/beta"]
    golden = np.array(golden_json()["outputs"]["embedding_output"][0], dtype=np.float32)
    assert out.shape == golden.shape == (64, 128)
    np.testing.assert_allclose(out, golden, atol=1e-5, rtol=0)


def test_golden_subset_and_rewrite_is_byte_identical_to_tensorflow(tmp_path):
    prefix = golden_prefix()
    names = ["cls/predictions/output_bias", "bert/pooler/dense/bias"]
    subset = read_tf_checkpoint(prefix, names)
    assert list(subset) == sorted(names)  # file order, not request order
    assert subset["cls/predictions/output_bias"].shape == (30522,)
    write_tf_checkpoint(tmp_path / "bert_model.ckpt", read_tf_checkpoint(prefix))
    for suffix in (".index", ".data-00000-of-00001"):
        ours = (tmp_path / f"bert_model.ckpt{suffix}").read_bytes()
        assert ours == Path(f"{prefix}{suffix}").read_bytes(), suffix


# ---------------------------------------------------------------------------------------------
# Round trips


def every_dtype() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "bert/encoder/layer_0/attention/self/query/kernel": rng.standard_normal((3, 1, 5)).astype(np.float32),
        "bert/encoder/layer_0/attention/self/query/kernel/adam_m": rng.standard_normal((3, 1, 5)).astype(np.float32),
        "bert/encoder/layer_0/attention/self/query/kernel/adam_v": rng.random((3, 1, 5)).astype(np.float32),
        "bert/encoder/layer_0/attention/self/query/bias": np.float32([0.5]),
        "half": rng.standard_normal((7, 3, 2, 1)).astype(np.float16),
        "double": rng.standard_normal((2, 2)),
        "int8": np.int8([-128, 0, 127]),
        "int16": np.int16([[-32768], [32767]]),
        "int32": np.arange(-5, 6, dtype=np.int32).reshape(11, 1),
        "int64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "uint8": np.arange(256, dtype=np.uint8),
        "uint16": np.uint16([0, 65535]),
        "bool": np.array([[True, False, True]]),
        "global_step": np.array(1000, dtype=np.int64),
        "scalar_f32": np.array(-0.0, dtype=np.float32),
        "empty": np.zeros((0,), np.float32),
        "empty_3d": np.zeros((2, 0, 3), np.int64),
        "fortran_order": np.asfortranarray(rng.standard_normal((4, 6)).astype(np.float32)),
        "big_endian": rng.standard_normal(5).astype(">f4"),
        "strided": rng.standard_normal((6, 8)).astype(np.float32)[::2, 1::3],
        "unicode/caf\u00e9/\u4e2d": np.int32([1, 2, 3]),
    }


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, array in want.items():
        assert isinstance(got[name], np.ndarray) and got[name].shape == array.shape, name
        assert got[name].dtype == array.dtype.newbyteorder("="), name
        assert np.array_equal(got[name], array), name


def test_round_trip_every_dtype_and_shape(tmp_path):
    tensors = every_dtype()
    write_tf_checkpoint(tmp_path / "ckpt", tensors)
    listed = list_tf_variables(tmp_path / "ckpt")
    assert listed["global_step"] == ("int64", ())
    assert listed["bool"] == ("bool", (1, 3))
    assert listed["empty_3d"] == ("int64", (2, 0, 3))
    assert list(listed) == sorted(tensors, key=lambda n: n.encode())
    assert_same(read_tf_checkpoint(tmp_path / "ckpt"), tensors)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.data-00000-of-00001", "ckpt.index"]


def test_bfloat16_is_stored_as_bfloat16_and_read_as_exact_float32(tmp_path):
    one = 1.0
    values = np.float32([[one, -2.5], [one + 2**-8, one + 3 * 2**-8],  # ties round to even
                         [one + 2**-8 + 2**-20, 2.0**-130], [np.nan, np.inf],
                         [-0.0, 3.4028235e38]])  # float32 max rounds up to inf
    expected = np.float32([[one, -2.5], [one, one + 2**-6], [one + 2**-7, 2.0**-130],
                           [np.nan, np.inf], [-0.0, np.inf]])
    as_bf16 = {"w": "bfloat16", "s": "bfloat16"}
    write_tf_checkpoint(tmp_path / "ckpt", {"w": values, "s": np.float32(0.1)}, store_as=as_bf16)
    assert list_tf_variables(tmp_path / "ckpt") == {"s": ("bfloat16", ()), "w": ("bfloat16", (5, 2))}
    got = read_tf_checkpoint(tmp_path / "ckpt")
    assert got["w"].dtype == np.float32 and isinstance(got["s"], np.ndarray) and got["s"].shape == ()
    assert np.array_equal(got["w"], expected, equal_nan=True) and np.signbit(got["w"][4, 0])
    assert got["s"] == np.float32(0.10009765625)
    write_tf_checkpoint(tmp_path / "again", got, store_as=as_bf16)
    again = read_tf_checkpoint(tmp_path / "again")  # exact once bfloat16
    assert all(np.array_equal(again[k], got[k], equal_nan=True) for k in got)


def test_many_variables_make_an_index_of_several_blocks(tmp_path):
    tensors = {f"bert/encoder/layer_{i}/attention/output/dense/kernel/adam_v": np.float32([i]) for i in range(6000)}
    tensors["bert/encoder/layer_1"] = np.int32(7)  # a name that is a prefix of others
    write_tf_checkpoint(tmp_path / "ckpt", tensors)
    # A data block is closed once it reaches BLOCK_SIZE, so this size means several blocks.
    assert (tmp_path / "ckpt.index").stat().st_size > 1.2 * BLOCK_SIZE
    assert_same(read_tf_checkpoint(tmp_path / "ckpt"), tensors)


def test_overwrite_replaces_and_bad_input_leaves_old_checkpoint(tmp_path):
    write_tf_checkpoint(tmp_path / "ckpt", {"a": np.float32([1])})
    write_tf_checkpoint(tmp_path / "ckpt", {"b": np.float64([2, 3])})
    with pytest.raises(BertkitError, match=r"ckpt\.index: cannot write variable 'c'"):
        write_tf_checkpoint(tmp_path / "ckpt", {"a": np.float32([1]), "c": np.array(["text"])})
    with pytest.raises(BertkitError, match="store_as names"):
        write_tf_checkpoint(tmp_path / "ckpt", {"a": np.float32([1])}, store_as={"typo": "bfloat16"})
    assert_same(read_tf_checkpoint(tmp_path / "ckpt"), {"b": np.float64([2, 3])})
    assert sorted(os.listdir(tmp_path)) == ["ckpt.data-00000-of-00001", "ckpt.index"]


def test_a_failed_write_leaves_the_old_checkpoint_and_no_temporary_files(tmp_path, monkeypatch):
    write_tf_checkpoint(tmp_path / "ckpt", {"a": np.float32([1])})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf_bundle, "encode_table", disk_full)  # after the data, before renames
    with pytest.raises(BertkitError, match=r"ckpt: cannot write checkpoint: .*No space left"):
        write_tf_checkpoint(tmp_path / "ckpt", {"b": np.float32([2])})
    monkeypatch.undo()
    assert_same(read_tf_checkpoint(tmp_path / "ckpt"), {"a": np.float32([1])})
    assert sorted(os.listdir(tmp_path)) == ["ckpt.data-00000-of-00001", "ckpt.index"]


# ---------------------------------------------------------------------------------------------
# SSTable and crc32c


def crc32c_reference(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_values_and_every_code_path():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"") == 0
    rng = np.random.default_rng(3)
    for size in [1, 63, 64, 65, 1023, 1024, 4097, 16411, 70001]:  # byte loop, 16 and 256 lanes, tails
        data = rng.integers(0, 256, size, dtype=np.uint8)
        assert crc32c(data) == crc32c(data.tobytes()) == crc32c_reference(data.tobytes()), size
    assert mask_crc32c(0) == 0xA282EAD8


@pytest.mark.parametrize("block_size", [64, 1024, BLOCK_SIZE])
def test_sstable_round_trip_with_shared_prefixes_and_restarts(block_size):
    keys = sorted({f"bert/encoder/layer_{i % 37}/k{i}".encode() for i in range(500)} | {b"", b"\xff\xff", b"bert"})
    items = [(k, k[::-1] * (len(k) % 3)) for k in keys]
    table = encode_table(items, block_size=block_size)
    assert list(read_table(table)) == items


def test_sstable_reader_checks_that_index_keys_bound_their_blocks(monkeypatch):
    items = [(f"key{i:04d}".encode(), b"v") for i in range(100)]
    monkeypatch.setattr(sstable, "_separator", lambda start, limit: start[:2])  # too small
    with pytest.raises(sstable.TableError, match="does not bound"):
        list(read_table(encode_table(items, block_size=64)))


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.fixture
def small_checkpoint(tmp_path) -> Path:
    tensors = {"bert/a": np.arange(10, dtype=np.float32), "bert/b": np.ones((3, 4), np.float64)}
    write_tf_checkpoint(tmp_path / "model.ckpt", tensors)
    return tmp_path / "model.ckpt"


def test_missing_index(tmp_path):
    with pytest.raises(BertkitError, match=r"nope\.ckpt\.index: no such file"):
        read_tf_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(BertkitError, match=r"nope\.ckpt\.index"):
        list_tf_variables(tmp_path / "nope.ckpt")


def test_truncated_data_names_file_and_variable(small_checkpoint):
    data = Path(f"{small_checkpoint}.data-00000-of-00001")
    os.truncate(data, data.stat().st_size - 8)
    with pytest.raises(BertkitError, match=r"data-00000-of-00001: truncated: variable 'bert/b'"):
        read_tf_checkpoint(small_checkpoint)
    assert list(read_tf_checkpoint(small_checkpoint, ["bert/a"])) == ["bert/a"]


def test_corrupt_tensor_bytes_fail_the_checksum(small_checkpoint):
    data = Path(f"{small_checkpoint}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[5] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(BertkitError, match=r"data-00000-of-00001: checksum mismatch.*'bert/a'"):
        read_tf_checkpoint(small_checkpoint)
    assert read_tf_checkpoint(small_checkpoint, verify=False)["bert/a"][1] != 1.0


@pytest.mark.parametrize("where", ["block", "magic", "truncated"])
def test_corrupt_index(small_checkpoint, where):
    index = Path(f"{small_checkpoint}.index")
    raw = bytearray(index.read_bytes())
    if where == "block":
        raw[12] ^= 0x01
    elif where == "magic":
        raw[-1] ^= 0x01
    else:
        raw = raw[:20]
    index.write_bytes(bytes(raw))
    message = {"block": "checksum mismatch", "magic": "bad magic", "truncated": "too short"}[where]
    with pytest.raises(BertkitError, match=rf"model\.ckpt\.index: corrupt .*{message}"):
        list_tf_variables(small_checkpoint)


def test_missing_shard_and_shard_count_mismatch(small_checkpoint):
    data = Path(f"{small_checkpoint}.data-00000-of-00001")
    data.rename(data.with_name("model.ckpt.data-00000-of-00002"))
    with pytest.raises(BertkitError, match=r"data-00000-of-00001: missing data shard 0 of the 1.*\[2\] shards"):
        read_tf_checkpoint(small_checkpoint)
    data.with_name("model.ckpt.data-00000-of-00002").unlink()
    with pytest.raises(BertkitError, match=r"data-00000-of-00001: missing data shard"):
        read_tf_checkpoint(small_checkpoint)


def test_unknown_name_and_unreadable_string_variable(small_checkpoint, tmp_path):
    with pytest.raises(BertkitError, match=r"model\.ckpt\.index: no variable named 'bert/c'"):
        read_tf_checkpoint(small_checkpoint, ["bert/a", "bert/c"])
    header = b"\x08\x01\x1a\x02\x08\x01"  # num_shards 1, version {producer 1}
    string_entry = b"\x08\x07\x12\x04\x12\x02\x08\x02\x28\x06"  # DT_STRING, shape [2], size 6
    (tmp_path / "s.index").write_bytes(encode_table([(b"", header), (b"vocab", string_entry)]))
    (tmp_path / "s.data-00000-of-00001").write_bytes(b"\x01\x02xyz!")
    assert list_tf_variables(tmp_path / "s") == {"vocab": ("string", (2,))}
    with pytest.raises(BertkitError, match=r"s\.index: variable 'vocab' has dtype string"):
        read_tf_checkpoint(tmp_path / "s")


def test_directory_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert find_tf_checkpoint(tmp_path) is None
    assert find_tf_checkpoint(tmp_path / "absent") is None
    with pytest.raises(BertkitError, match=str(tmp_path)):
        read_tf_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------------------
# Finding the checkpoint


def touch_checkpoint(directory: Path, name: str) -> None:
    write_tf_checkpoint(directory / name, {"x": np.float32([1])})


def test_find_prefers_highest_step_numerically(tmp_path):
    for step in (100, 900, 2000):
        touch_checkpoint(tmp_path, f"model.ckpt-{step}")
    assert find_tf_checkpoint(tmp_path) == tmp_path / "model.ckpt-2000"
    touch_checkpoint(tmp_path, "bert_model.ckpt")
    assert find_tf_checkpoint(tmp_path) == tmp_path / "bert_model.ckpt"


def test_find_follows_the_state_file(tmp_path):
    for step in (100, 2000):
        touch_checkpoint(tmp_path, f"model.ckpt-{step}")
    state = tmp_path / "checkpoint"
    state.write_text('model_checkpoint_path: "model.ckpt-100"\nall_model_checkpoint_paths: "model.ckpt-2000"\n')
    assert find_tf_checkpoint(tmp_path) == tmp_path / "model.ckpt-100"
    state.write_text(f'model_checkpoint_path: "{tmp_path / "model.ckpt-2000"}"\n')
    assert find_tf_checkpoint(tmp_path) == tmp_path / "model.ckpt-2000"
    state.write_text('model_checkpoint_path: "/elsewhere/gs/run7/model.ckpt-100"\n')  # moved dir
    assert find_tf_checkpoint(tmp_path) == tmp_path / "model.ckpt-100"
    assert read_tf_checkpoint(tmp_path)["x"].tolist() == [1.0]


def test_find_single_other_index_and_ambiguity(tmp_path):
    touch_checkpoint(tmp_path, "squad.ckpt")
    assert find_tf_checkpoint(tmp_path) == tmp_path / "squad.ckpt"
    touch_checkpoint(tmp_path, "other.ckpt")
    with pytest.raises(BertkitError, match="several TensorFlow checkpoints"):
        find_tf_checkpoint(tmp_path)
