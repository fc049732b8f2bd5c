"""Read and write TensorFlow V2 checkpoints (tensor bundles) without TensorFlow.

A checkpoint ``PREFIX`` is two kinds of files:

* ``PREFIX.index``: an SSTable (see ``sstable.py``) whose keys are variable names and whose
  values are serialized protobufs. The empty key holds a ``BundleHeaderProto`` (shard count,
  endianness, format version); every other key a ``BundleEntryProto`` (dtype, shape, shard id,
  byte offset and size in that shard, and the masked crc32c of the bytes).
* ``PREFIX.data-0000K-of-0000N``: the raw little-endian bytes of the tensors, back to back.

Reading verifies the index's block checksums always, and each tensor's crc32c unless
``verify=False`` (the numpy crc32c runs at about 1 GB/s, so it is on by default).

bfloat16 variables are returned as float32 (exact: a bfloat16 is the high half of a float32),
so ``torch.from_numpy`` takes them as they are; ``list_tf_variables`` still says "bfloat16". To
write bfloat16, pass ``store_as={name: "bfloat16"}`` (rounds to nearest-even) or an array whose
dtype is named ``bfloat16`` (ml_dtypes). String and other non-numeric variables, and
partitioned (sliced) variables, are listed but cannot be read.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bertkit.convert.protowire import proto_fields, put_field, signed_int64
from bertkit.convert.sstable import (
    TableError,
    crc32c,
    encode_table,
    mask_crc32c,
    read_table,
    unmask_crc32c,
)
from bertkit.errors import file_error

__all__ = [
    "find_tf_checkpoint",
    "list_tf_variables",
    "read_tf_checkpoint",
    "write_tf_checkpoint",
]

# ----------------------------------------------------------------------------------------------
# The bundle protos and dtypes.

# DataType enum value -> name (numpy's name where numpy has the type).
_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 19: "float16",
    20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}  # fmt: skip
_DTYPE_ENUMS = {name: enum for enum, name in _DTYPE_NAMES.items()}
# Names with a fixed-width numpy storage type (bfloat16 is stored as its 16-bit pattern).
_STORAGE = {name: np.dtype(name) for name in _DTYPE_NAMES.values() if hasattr(np, name)}
_STORAGE["bool"] = np.dtype(np.bool_)
_STORAGE["bfloat16"] = np.dtype(np.uint16)
_FORMAT_VERSION = 1  # the bundle format version this code reads and writes


@dataclass(frozen=True)
class _Entry:
    """A decoded BundleEntryProto."""

    dtype: str
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    sliced: bool  # a partitioned variable: the bytes live in per-slice entries


def _decode_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, value in proto_fields(buf):
        if number == 2 and isinstance(value, bytes):
            size = 0
            for dim_number, dim_value in proto_fields(value):
                if dim_number == 1 and isinstance(dim_value, int):
                    size = signed_int64(dim_value)
            if size < 0:
                raise TableError("a dimension of unknown size")
            dims.append(size)
        elif number == 3 and value:
            raise TableError("a shape of unknown rank")
    return tuple(dims)


def _decode_entry(buf: bytes) -> _Entry:
    ints = {1: 0, 3: 0, 4: 0, 5: 0, 6: 0}  # dtype, shard_id, offset, size, crc32c
    shape, sliced = b"", False
    for number, value in proto_fields(buf):
        if number == 2 and isinstance(value, bytes):
            shape += value  # repeated occurrences of a message field merge
        elif number == 7:
            sliced = True
        elif number in ints:
            if not isinstance(value, int):
                raise TableError(f"bundle entry field {number} has the wrong wire type")
            ints[number] = value
    offset, size = signed_int64(ints[4]), signed_int64(ints[5])
    if offset < 0 or size < 0:
        raise TableError("negative offset or size in a bundle entry")
    dtype = _DTYPE_NAMES.get(ints[1], f"dtype{ints[1]}")
    return _Entry(dtype, _decode_shape(shape), signed_int64(ints[3]), offset, size, ints[6], sliced)


def _encode_entry(dtype: str, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    """Serialize a BundleEntryProto the way protobuf does (proto3: zero scalars omitted)."""
    shape_msg = bytearray()
    for dim in shape:
        dim_msg = bytearray()
        if dim:
            put_field(dim_msg, 1, dim)
        put_field(shape_msg, 2, bytes(dim_msg))
    out = bytearray()
    put_field(out, 1, _DTYPE_ENUMS[dtype])
    put_field(out, 2, bytes(shape_msg))
    for number, value in ((4, offset), (5, size)):  # shard_id (3) is always 0
        if value:
            put_field(out, number, value)
    if crc:
        out.append(6 << 3 | 5)
        out += crc.to_bytes(4, "little")
    return bytes(out)


def _decode_header(buf: bytes) -> tuple[int, int, int]:
    """(num_shards, endianness, min_consumer) of a BundleHeaderProto."""
    num_shards, endianness, min_consumer = 0, 0, 0
    for number, value in proto_fields(buf):
        if number == 1 and isinstance(value, int):
            num_shards = signed_int64(value)
        elif number == 2 and isinstance(value, int):
            endianness = value
        elif number == 3 and isinstance(value, bytes):
            for version_number, version_value in proto_fields(value):
                if version_number == 2 and isinstance(version_value, int):
                    min_consumer = signed_int64(version_value)
    return num_shards, endianness, min_consumer


def _encode_header() -> bytes:
    """One little-endian shard, format version 1 (min_consumer 0 is omitted)."""
    version = bytearray()
    put_field(version, 1, _FORMAT_VERSION)
    out = bytearray()
    put_field(out, 1, 1)
    put_field(out, 3, bytes(version))
    return bytes(out)


# ----------------------------------------------------------------------------------------------
# Reading a bundle.


def _index_path(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + ".index")


def _data_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


def _as_prefix(prefix: str | Path) -> Path:
    """Accept a prefix, a path to its .index or .data file, or a directory holding one."""
    path = Path(prefix)
    if path.is_dir():
        found = find_tf_checkpoint(path)
        if found is None:
            raise file_error(path, "no TensorFlow checkpoint (no *.index file) in this directory")
        return found
    name = re.sub(r"\.(index|data-\d{5}-of-\d{5})$", "", path.name)
    return path.with_name(name)


@dataclass(frozen=True)
class _Bundle:
    """A parsed .index: the shard count and the entries in key order."""

    prefix: Path
    num_shards: int
    entries: dict[str, _Entry]


def _parse_index(index: Path, buf: bytes) -> _Bundle:
    items = read_table(buf)
    first = next(items, None)
    if first is None or first[0] != b"":
        raise TableError("no header entry")
    num_shards, endianness, min_consumer = _decode_header(first[1])
    if endianness != 0:
        raise file_error(index, "big-endian checkpoints are not supported")
    if min_consumer > _FORMAT_VERSION:
        raise file_error(index, f"needs a reader of bundle format {min_consumer} or newer")
    if num_shards < 1:
        raise TableError(f"header says {num_shards} data shards")
    entries = {}
    for key, value in items:
        if key.startswith(b"\x00"):
            continue  # one slice of a partitioned variable, reached through its full entry
        entry = _decode_entry(value)
        if not 0 <= entry.shard_id < num_shards:
            raise TableError(f"entry {key!r} names shard {entry.shard_id} of {num_shards}")
        entries[key.decode("utf-8")] = entry
    return _Bundle(index.with_name(index.name[: -len(".index")]), num_shards, entries)


def _load_bundle(prefix: str | Path) -> _Bundle:
    index = _index_path(_as_prefix(prefix))
    try:
        buf = index.read_bytes()
    except FileNotFoundError:
        raise file_error(index, "no such file (the .index of a TensorFlow checkpoint)") from None
    except OSError as error:
        raise file_error(index, f"cannot read: {error.strerror}") from None
    try:
        return _parse_index(index, buf)
    except (TableError, UnicodeDecodeError) as error:
        raise file_error(index, f"corrupt TensorFlow checkpoint index: {error}") from None


def list_tf_variables(prefix: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype name, shape) of every variable of the checkpoint, in file (sorted) order.

    Dtype names are numpy's ("float32", "int64", "bool") plus "bfloat16", "string" and
    TensorFlow's names for the rest ("qint8", "resource", ...).
    """
    return {name: (e.dtype, e.shape) for name, e in _load_bundle(prefix).entries.items()}


def _open_shard(bundle: _Bundle, shard: int) -> BinaryIO:
    path = _data_path(bundle.prefix, shard, bundle.num_shards)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        pattern = re.escape(bundle.prefix.name) + r"\.data-\d{5}-of-(\d{5})"
        files = bundle.prefix.parent.iterdir()
        counts = {int(m[1]) for p in files if (m := re.fullmatch(pattern, p.name))}
        counts.discard(bundle.num_shards)
        found = f"; there are data files for {sorted(counts)} shards instead" if counts else ""
        problem = f"missing data shard {shard} of the {bundle.num_shards} the index names{found}"
        raise file_error(path, problem) from None
    except OSError as error:
        raise file_error(path, f"cannot open: {error.strerror}") from None


def _read_bytes(file: BinaryIO, name: str, entry: _Entry, verify: bool) -> np.ndarray:
    """The stored bytes of ``entry`` as a uint8 array, bounds-checked and crc-verified."""
    size = os.fstat(file.fileno()).st_size
    if entry.offset + entry.size > size:
        raise file_error(
            file.name,
            f"truncated: variable {name!r} needs bytes [{entry.offset}, "
            f"{entry.offset + entry.size}) but the file has {size} bytes",
        )
    data = np.empty(entry.size, dtype=np.uint8)
    file.seek(entry.offset)
    if file.readinto(memoryview(data)) != entry.size:
        raise file_error(file.name, f"short read for variable {name!r}")
    if verify and crc32c(data) != unmask_crc32c(entry.crc32c):
        raise file_error(file.name, f"checksum mismatch: the bytes of variable {name!r} are corrupt")
    return data


def _to_array(entry: _Entry, data: np.ndarray) -> np.ndarray:
    """Reinterpret the bytes of one entry as an array of its dtype and shape."""
    storage = _STORAGE[entry.dtype].newbyteorder("<")
    array = data.view(storage).reshape(entry.shape).astype(storage.newbyteorder("="), copy=False)
    if entry.dtype == "bfloat16":  # widen to float32 exactly: the bits become the high half
        widened = array.astype(np.uint32)
        widened <<= 16  # in place, so a 0-d array stays an array
        array = widened.view(np.float32)
    return array


def _check_readable(path: Path, name: str, entry: _Entry) -> None:
    if entry.sliced:
        raise file_error(path, f"variable {name!r} is partitioned (sliced); not supported")
    if entry.dtype not in _STORAGE:
        raise file_error(path, f"variable {name!r} has dtype {entry.dtype}; cannot be read")
    expected = int(np.prod(entry.shape, dtype=np.int64)) * _STORAGE[entry.dtype].itemsize
    if entry.size != expected:
        raise file_error(
            path, f"variable {name!r} has {entry.size} bytes, its shape needs {expected}"
        )


def read_tf_checkpoint(
    prefix: str | Path, names: Iterable[str] | None = None, *, verify: bool = True
) -> dict[str, np.ndarray]:
    """Read the variables of a checkpoint (all, or only ``names``) as numpy arrays.

    ``prefix`` is the checkpoint prefix (``dir/bert_model.ckpt``); a path to its .index, or a
    directory (see ``find_tf_checkpoint``), also works. Arrays have the stored dtype and shape,
    except bfloat16, returned as float32. Results are in file order. ``verify`` checks each
    tensor's crc32c. Raises BertkitError for a missing, truncated or corrupt file, an unknown
    name, or a variable that cannot be read (strings, partitioned variables).
    """
    bundle = _load_bundle(prefix)
    index = _index_path(bundle.prefix)
    names = [names] if isinstance(names, str) else names
    wanted = list(bundle.entries) if names is None else list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in bundle.entries]
    if unknown:
        raise file_error(index, f"no variable named {unknown[0]!r} ({len(unknown)} unknown)")
    for name in wanted:
        _check_readable(index, name, bundle.entries[name])
    order = sorted(wanted, key=lambda n: (bundle.entries[n].shard_id, bundle.entries[n].offset))
    arrays, files = {}, {}
    try:
        for name in order:
            entry = bundle.entries[name]
            if entry.shard_id not in files:
                files[entry.shard_id] = _open_shard(bundle, entry.shard_id)
            data = _read_bytes(files[entry.shard_id], name, entry, verify)
            arrays[name] = _to_array(entry, data)
    finally:
        for file in files.values():
            file.close()
    return {name: arrays[name] for name in bundle.entries if name in arrays}


# ----------------------------------------------------------------------------------------------
# Writing a bundle.


def _to_bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """Round float values to bfloat16 (nearest-even; NaN stays NaN) and return the bit patterns."""
    bits = np.asarray(array, dtype=np.float32, order="C").view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16
    nan = np.isnan(array)
    return np.where(nan, (bits >> 16) | np.uint32(0x40), rounded).astype(np.uint16)


def _stored_array(array: np.ndarray, store_as: str | None) -> tuple[str, np.ndarray]:
    """(dtype name, contiguous little-endian array of the bytes to store) for one tensor."""
    array = np.asarray(array)
    dtype = store_as or ("bfloat16" if array.dtype.name == "bfloat16" else array.dtype.name)
    if dtype not in _STORAGE or dtype.startswith("q"):
        raise ValueError(f"unsupported dtype {dtype}")
    if dtype == "bfloat16":
        bf16 = array.dtype.name == "bfloat16"
        stored = array.view(np.uint16) if bf16 else _to_bfloat16_bits(array)
    else:
        stored = array.astype(_STORAGE[dtype], copy=False)
    return dtype, np.asarray(stored, dtype=stored.dtype.newbyteorder("<"), order="C")


def _prepare(
    path: Path, tensors: Mapping[str, np.ndarray], store_as: Mapping[str, str]
) -> list[tuple[bytes, str, np.ndarray]]:
    """(key, dtype name, stored array) per tensor, sorted by key as TensorFlow sorts them."""
    extra = set(store_as) - set(tensors)
    if extra:
        raise file_error(path, f"store_as names variables that are not written: {sorted(extra)}")
    prepared = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name.startswith("\x00"):
            raise file_error(path, f"cannot write a variable named {name!r}")
        try:
            prepared.append((name.encode("utf-8"), *_stored_array(value, store_as.get(name))))
        except (ValueError, TypeError) as error:
            raise file_error(path, f"cannot write variable {name!r}: {error}") from None
    return sorted(prepared, key=lambda item: item[0])


def _write_data(file: BinaryIO, tensors: list[tuple[bytes, str, np.ndarray]]) -> list[tuple[bytes, bytes]]:
    """Write the tensors' bytes back to back; return their (key, BundleEntryProto) pairs."""
    items, offset = [], 0
    for key, dtype, stored in tensors:
        raw = stored.reshape(-1).view(np.uint8)
        file.write(memoryview(raw))
        entry = _encode_entry(dtype, stored.shape, offset, raw.size, mask_crc32c(crc32c(raw)))
        items.append((key, entry))
        offset += raw.size
    return items


def write_tf_checkpoint(
    prefix: str | Path,
    tensors: Mapping[str, np.ndarray],
    *,
    store_as: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` as a one-shard checkpoint: ``PREFIX.index``, ``PREFIX.data-00000-of-00001``.

    Arrays keep their dtype unless ``store_as`` names another for a variable (e.g.
    ``{"bert/pooler/dense/kernel": "bfloat16"}``). Files are written under temporary names
    and renamed into place, the .index last, so readers never see a half-written checkpoint.
    TensorFlow's ``tf.train.load_checkpoint`` reads the result.
    """
    prefix = Path(prefix)
    data_path, index_path = _data_path(prefix, 0, 1), _index_path(prefix)
    prepared = _prepare(index_path, tensors, store_as or {})
    suffix = f".tmp-{uuid.uuid4().hex[:12]}"
    data_tmp, index_tmp = Path(f"{data_path}{suffix}"), Path(f"{index_path}{suffix}")
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        with open(data_tmp, "wb") as file:
            items = _write_data(file, prepared)
            _sync(file)
        with open(index_tmp, "wb") as file:
            file.write(encode_table([(b"", _encode_header()), *items]))
            _sync(file)
        os.replace(data_tmp, data_path)
        os.replace(index_tmp, index_path)
    except OSError as error:
        raise file_error(prefix, f"cannot write checkpoint: {error}") from None
    finally:
        data_tmp.unlink(missing_ok=True)
        index_tmp.unlink(missing_ok=True)


def _sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


# ----------------------------------------------------------------------------------------------
# Finding the checkpoint in a directory.


def _state_file_prefix(directory: Path) -> Path | None:
    """The model_checkpoint_path of a ``checkpoint`` state file (a text proto), if it exists."""
    try:
        text = (directory / "checkpoint").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
    if not match:
        return None
    path = Path(_unescape(match[1]))
    candidates = [path if path.is_absolute() else directory / path, directory / path.name]
    # An absolute path from the machine that saved it still works when moved along with it.
    return next((p for p in candidates if _index_path(p).is_file()), None)


def _unescape(text: str) -> str:
    """Undo a text-proto string's C escapes (\\", \\\\, \\n, octal and hex bytes)."""
    simple = {"n": b"\n", "t": b"\t", "r": b"\r", '"': b'"', "'": b"'", "\\": b"\\"}

    def one(match: re.Match[bytes]) -> bytes:
        code = match[1].decode("ascii", "replace")
        if code[0] in "01234567":
            return bytes([int(code, 8) & 0xFF])
        if code[0] == "x":
            return bytes([int(code[1:], 16)])
        return simple.get(code, match[0])

    raw = re.sub(rb"\\([0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)", one, text.encode("utf-8"))
    return raw.decode("utf-8", errors="replace")


def find_tf_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint prefix in ``directory``, or None when it holds no TensorFlow checkpoint.

    In order: the ``checkpoint`` state file's model_checkpoint_path (relative to the directory,
    or absolute; an absolute path that no longer exists is looked up by its file name in the
    directory), else ``bert_model.ckpt``, else the ``model.ckpt-N`` with the highest N, else the
    only ``*.index`` there. Several unrelated ``*.index`` files raise a BertkitError.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    state = _state_file_prefix(directory)
    if state is not None:
        return state
    if _index_path(directory / "bert_model.ckpt").is_file():
        return directory / "bert_model.ckpt"
    steps = [m for p in directory.glob("model.ckpt-*.index")
             if (m := re.fullmatch(r"model\.ckpt-(\d+)", p.name[: -len(".index")]))]
    if steps:
        return directory / max(steps, key=lambda m: int(m[1]))[0]
    indexes = sorted(p for p in directory.glob("*.index") if p.is_file())
    if len(indexes) > 1:
        names = ", ".join(p.name for p in indexes)
        raise file_error(directory, f"several TensorFlow checkpoints, say which: {names}")
    return directory / indexes[0].name[: -len(".index")] if indexes else None
