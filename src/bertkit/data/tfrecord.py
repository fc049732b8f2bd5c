"""TFRecord files of ``tf.train.Example`` protos, read and written without TensorFlow.

A TFRecord file is a sequence of records, each framed as (TensorFlow's ``record_writer.cc``)::

    uint64 length, little-endian | uint32 masked crc32c of those 8 bytes | data | uint32 masked crc32c of data

with LevelDB's masked crc32c (``bertkit.convert.sstable``). Uncompressed files only, as Google's
``create_pretraining_data.py`` writes them.

A record here is a serialized ``tf.train.Example``, in protobuf wire format::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }     // entries: { string key = 1; Feature value = 2; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1; }  Int64List { repeated int64 value = 1; }

Current writers pack the numeric lists (one length-delimited field), but a protobuf parser must
also accept them unpacked (one varint or fixed32 field per value), so both decode. Packed varints
are decoded and encoded with numpy, not a Python loop per value.

Checksums are computed for a batch of records at once (``crc32c_many``, vectorised across records):
sstable's crc32c is built for large buffers, and a pretraining example is under a kilobyte.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from bertkit.convert.sstable import TableError, crc32c, mask_crc32c
from bertkit.convert.protowire import proto_fields, put_field, signed_int64
from bertkit.errors import file_error
from bertkit.io import atomic_open

__all__ = [
    "KINDS",
    "RecordWriter",
    "crc32c_many",
    "decode_example",
    "encode_example",
    "iter_records",
    "read_examples",
    "write_examples",
]

KINDS = ("int64", "float", "bytes")  # feature kinds: int64_list, float_list, bytes_list
_KIND_FIELD = {"bytes": 1, "float": 2, "int64": 3}  # Feature's oneof field numbers
_FIELD_KIND = {number: kind for kind, number in _KIND_FIELD.items()}
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER_SIZE = 12  # uint64 length + uint32 masked crc of it
_BATCH_RECORDS = 1024  # records read or written per batch of checksums
_BATCH_BYTES = 8 << 20
_LONG_RECORD = 1 << 16  # longer records get sstable's crc32c one by one (it is fast on those)

# ----------------------------------------------------------------------------------------------
# crc32c of many short buffers at once.
#
# The raw crc register update is linear over GF(2), so for a buffer b of n bytes
#   crc32c(b) = raw(0, b) ^ crc32c(n zero bytes),
# and raw(0, ·) is unchanged by leading zero bytes. Buffers are therefore left-padded with zeros to
# a common width and run through the byte-table update together, one numpy step per byte column.


@functools.cache
def _byte_table() -> np.ndarray:
    """raw(0, [b]) for each byte b: the classic crc32c byte table, derived from ``crc32c``."""
    zero = crc32c(b"\0")
    return np.array([crc32c(bytes([b])) ^ zero for b in range(256)], dtype=np.uint32)


@functools.lru_cache(maxsize=4096)
def _zeros_crc(length: int) -> int:
    return crc32c(bytes(length))


def _crc_group(buffers: Sequence[bytes]) -> np.ndarray:
    """crc32c of buffers of similar length, vectorised across them."""
    width = max(len(buf) for buf in buffers)
    if len(buffers) == 1 or width > _LONG_RECORD:
        return np.array([crc32c(buf) for buf in buffers], dtype=np.uint32)
    grid = np.zeros((len(buffers), width), dtype=np.uint8)  # (K, W), each buffer right-aligned
    for row, buf in enumerate(buffers):
        if buf:
            grid[row, width - len(buf) :] = np.frombuffer(buf, dtype=np.uint8)
    table = _byte_table()
    register = np.zeros(len(buffers), dtype=np.uint32)
    for column in np.ascontiguousarray(grid.T):  # (W, K): one byte of every buffer per step
        register = (register >> 8) ^ table[(register ^ column) & 0xFF]
    return register ^ np.array([_zeros_crc(len(buf)) for buf in buffers], dtype=np.uint32)


def crc32c_many(buffers: Sequence[bytes]) -> np.ndarray:
    """The crc32c of each buffer, as a uint32 array (N,); equal to ``[crc32c(b) for b in buffers]``."""
    out = np.zeros(len(buffers), dtype=np.uint32)
    order = sorted(range(len(buffers)), key=lambda i: len(buffers[i]))
    start = 0
    while start < len(order):  # groups of similar length, so little padding is hashed
        limit = len(buffers[order[start]]) * 5 // 4 + 16
        stop = start + 1
        while stop < len(order) and len(buffers[order[stop]]) <= limit and stop - start < 4096:
            stop += 1
        group = order[start:stop]
        out[group] = _crc_group([buffers[i] for i in group])
        start = stop
    return out


# ----------------------------------------------------------------------------------------------
# Record framing.


def _open_input(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as error:
        raise file_error(path, f"cannot read: {error.strerror or error}") from None


def _read_batch(file: BinaryIO, path: Path, index: int, size: int) -> list[tuple[int, bytes, int]]:
    """Up to a batch of (offset, data, stored masked data crc); the length crcs are checked here."""
    batch: list[tuple[int, bytes, int]] = []
    nbytes = 0
    while len(batch) < _BATCH_RECORDS and nbytes < _BATCH_BYTES:
        offset = file.tell()
        header = file.read(_HEADER_SIZE)
        if not header:
            break
        where = f"record {index + len(batch)} (at byte {offset})"
        if len(header) < _HEADER_SIZE:
            raise file_error(path, f"truncated: {where} has an incomplete header")
        (length,) = _LENGTH.unpack_from(header)
        (length_crc,) = _CRC.unpack_from(header, 8)
        if mask_crc32c(crc32c(header[:8])) != length_crc:
            raise file_error(path, f"corrupt: {where} has a bad length checksum")
        if offset + _HEADER_SIZE + length + 4 > size:
            raise file_error(path, f"truncated: {where} runs past the end of the file")
        body = file.read(length + 4)
        batch.append((offset, body[:length], _CRC.unpack_from(body, length)[0]))
        nbytes += length
    return batch


def _verify(path: Path, index: int, batch: list[tuple[int, bytes, int]]) -> None:
    crcs = crc32c_many([data for _, data, _ in batch])
    for i, ((offset, _, stored), crc) in enumerate(zip(batch, crcs.tolist())):
        if mask_crc32c(crc) != stored:
            where = f"record {index + i} (at byte {offset})"
            raise file_error(path, f"corrupt: {where} has a bad data checksum")


def iter_records(path: str | Path, verify: bool = True) -> Iterator[bytes]:
    """Yield the data of each record of an uncompressed TFRecord file, in file order.

    Both checksums of every record are checked unless ``verify`` is False (then only the length's).
    A truncated or corrupt file raises a BertkitError naming the file and the record number.
    """
    path = Path(path)
    with _open_input(path) as file:
        size = os.fstat(file.fileno()).st_size
        index = 0
        while batch := _read_batch(file, path, index, size):
            if verify:
                _verify(path, index, batch)
            for _, data, _ in batch:
                yield data
            index += len(batch)


class RecordWriter:
    """Writes records to a TFRecord file atomically: it appears, complete, only on ``close()``.

    Use it as a context manager; an exception inside the ``with`` block leaves no file behind.
    ``count`` is the number of records written so far.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._stack = contextlib.ExitStack()
        self._file: BinaryIO = self._stack.enter_context(atomic_open(self.path, "wb"))

    def write(self, record: bytes) -> None:
        """Append one record (any bytes, e.g. a serialized Example)."""
        self._pending.append(bytes(record))
        self._pending_bytes += len(record)
        self.count += 1
        if len(self._pending) >= _BATCH_RECORDS or self._pending_bytes >= _BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        lengths = [_LENGTH.pack(len(record)) for record in self._pending]
        length_crcs = crc32c_many(lengths).tolist()
        data_crcs = crc32c_many(self._pending).tolist()
        for record, length, length_crc, data_crc in zip(self._pending, lengths, length_crcs, data_crcs):
            self._file.write(length + _CRC.pack(mask_crc32c(length_crc)))
            self._file.write(record)
            self._file.write(_CRC.pack(mask_crc32c(data_crc)))
        self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        """Write what is buffered and move the file into place."""
        self._flush()
        self._stack.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if error is None:
            self.close()
        else:  # hand the error to atomic_open, which removes the temp file
            self._stack.__exit__(kind, error, trace)


# ----------------------------------------------------------------------------------------------
# Protobuf wire format.


def _decode_varints(buf: bytes) -> np.ndarray:
    """A packed run of varints as int64 (N,), decoded with numpy."""
    data = np.frombuffer(buf, dtype=np.uint8)
    ends = np.flatnonzero(data < 0x80)  # the last byte of each varint
    if ends.size == data.size:
        return data.astype(np.int64)
    if ends.size == 0 or ends[-1] != data.size - 1:
        raise TableError("truncated packed varint")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise TableError("varint longer than 10 bytes")
    shift = (np.arange(data.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    parts = (data & 0x7F).astype(np.uint64) << shift
    return np.bitwise_or.reduceat(parts, starts).view(np.int64)


_VARINT_LIMITS = np.uint64(1) << (np.arange(1, 10, dtype=np.uint64) * np.uint64(7))  # 2**7 .. 2**63


def _encode_varints(values: np.ndarray) -> bytes:
    """int64 values (N,) as a packed run of varints (negative ones take ten bytes)."""
    raw = values.astype(np.int64).view(np.uint64)
    if raw.size == 0 or raw.max() < 0x80:
        return raw.astype(np.uint8).tobytes()
    shift = np.arange(10, dtype=np.uint64) * np.uint64(7)
    groups = ((raw[:, None] >> shift) & np.uint64(0x7F)).astype(np.uint8)  # (N, 10)
    nbytes = 1 + (raw[:, None] >= _VARINT_LIMITS).sum(axis=1)  # (N,)
    position = np.arange(10)
    groups[position < nbytes[:, None] - 1] |= 0x80  # continuation bits
    return groups[position < nbytes[:, None]].tobytes()


def _list_value(kind: str, value: int | bytes) -> np.ndarray | bytes:
    """One field of a list message: packed numbers or a bytes value (bytes), or one number (int:
    an unpacked int64's varint or an unpacked float's fixed32 bits)."""
    if kind == "bytes" and isinstance(value, bytes):
        return value
    if kind == "int64":
        return _decode_varints(value) if isinstance(value, bytes) else np.array([signed_int64(value)], np.int64)
    if kind == "float" and isinstance(value, bytes) and len(value) % 4 == 0:
        return np.frombuffer(value, dtype="<f4")
    if kind == "float" and isinstance(value, int) and value < 1 << 32:
        return np.array([value], dtype=np.uint32).view(np.float32)
    raise TableError(f"a {kind}_list value with the wrong wire type or length")


def _decode_list(kind: str, buf: bytes) -> np.ndarray:
    """The values of an Int64List, FloatList or BytesList message, packed or not."""
    parts = [_list_value(kind, value) for number, value in proto_fields(buf) if number == 1]
    if kind == "bytes":
        array = np.empty(len(parts), dtype=object)
        array[:] = parts
        return array
    dtype = np.int64 if kind == "int64" else np.float32
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _decode_feature(buf: bytes) -> np.ndarray:
    kind, payload = "int64", b""  # a Feature with no kind set reads as an empty int64 list
    for number, value in proto_fields(buf):
        if number in _FIELD_KIND and isinstance(value, bytes):
            # oneof: a different kind replaces the value; the same kind again merges (concatenates)
            payload = payload + value if _FIELD_KIND[number] == kind else value
            kind = _FIELD_KIND[number]
    return _decode_list(kind, payload)


def _decode_entry(buf: bytes) -> tuple[str, np.ndarray]:
    key, value = b"", b""
    for number, field in proto_fields(buf):
        if number == 1 and isinstance(field, bytes):
            key = field
        elif number == 2 and isinstance(field, bytes):
            value += field
    try:
        return key.decode("utf-8"), _decode_feature(value)
    except UnicodeDecodeError:
        raise TableError("a feature name that is not UTF-8") from None


def decode_example(record: bytes) -> dict[str, np.ndarray]:
    """A serialized tf.train.Example as {name: values}: int64 (N,), float32 (N,) or object (N,) of bytes.

    Raises TableError (a ValueError) on malformed bytes.
    """
    features: dict[str, np.ndarray] = {}
    for number, value in proto_fields(record):
        if number == 1 and isinstance(value, bytes):
            for entry_number, entry in proto_fields(value):
                if entry_number == 1 and isinstance(entry, bytes):
                    name, feature = _decode_entry(entry)
                    features[name] = feature
    return features


def _infer_kind(name: str, raw: object, values: np.ndarray) -> str:
    if values.size == 0 and not isinstance(raw, np.ndarray):  # [] has no dtype of its own
        raise ValueError(f"feature {name!r} is empty, so its kind is unknown: pass kinds={{{name!r}: ...}}")
    if values.dtype.kind in "biu":
        return "int64"
    if values.dtype.kind == "f":
        return "float"
    if values.dtype.kind in "SUO":
        return "bytes"
    raise ValueError(f"feature {name!r} has values of dtype {values.dtype}, not int, float or bytes")


def _encode_list(kind: str, name: str, values: np.ndarray) -> bytes:
    out = bytearray()
    if kind == "int64" and values.size:
        put_field(out, 1, _encode_varints(values))
    elif kind == "float" and values.size:
        put_field(out, 1, values.astype("<f4").tobytes())
    elif kind == "bytes":
        for value in values.tolist():
            if not isinstance(value, (bytes, str)):
                raise ValueError(f"feature {name!r}: a bytes_list value that is not bytes or str")
            put_field(out, 1, value.encode("utf-8") if isinstance(value, str) else value)
    return bytes(out)


def encode_example(features: Mapping[str, np.ndarray | Sequence], kinds: Mapping[str, str] | None = None) -> bytes:
    """Serialize {name: values} as a tf.train.Example, features in the mapping's order.

    A feature's kind ("int64", "float" or "bytes") comes from ``kinds`` or else from its dtype:
    integers and bools are int64_list, floats float_list, bytes/str bytes_list. Values of any shape
    are flattened; an empty list needs its kind stated (an empty array has its dtype). Raises
    ValueError for an unknown kind, an empty list of no stated kind, or a dtype that fits none.
    """
    feature_map = bytearray()
    for name, raw in features.items():
        values = np.asarray(raw).reshape(-1)
        kind = (kinds or {}).get(name) or _infer_kind(name, raw, values)
        if kind not in _KIND_FIELD:
            raise ValueError(f"feature {name!r}: unknown kind {kind!r} (use one of {', '.join(KINDS)})")
        feature = bytearray()
        put_field(feature, _KIND_FIELD[kind], _encode_list(kind, name, values))
        entry = bytearray()
        put_field(entry, 1, name.encode("utf-8"))
        put_field(entry, 2, bytes(feature))
        put_field(feature_map, 1, bytes(entry))
    example = bytearray()
    put_field(example, 1, bytes(feature_map))
    return bytes(example)


# ----------------------------------------------------------------------------------------------
# Files of Examples.


def read_examples(path: str | Path, verify: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Yield each record of a TFRecord file decoded as an Example (see ``decode_example``)."""
    for index, record in enumerate(iter_records(path, verify)):
        try:
            yield decode_example(record)
        except TableError as error:
            raise file_error(path, f"record {index} is not a valid tf.train.Example ({error})") from None


def write_examples(
    path: str | Path,
    examples: Iterable[Mapping[str, np.ndarray | Sequence]],
    kinds: Mapping[str, str] | None = None,
) -> int:
    """Write Examples to a TFRecord file atomically; returns how many were written.

    ``kinds`` maps feature names to "int64", "float" or "bytes" where the dtype does not say (see
    ``encode_example``). A feature that cannot be encoded raises a BertkitError naming the file and
    the example, and leaves no file behind.
    """
    with RecordWriter(path) as writer:
        for index, example in enumerate(examples):
            try:
                writer.write(encode_example(example, kinds))
            except ValueError as error:
                raise file_error(path, f"example {index}: {error}") from None
    return writer.count
