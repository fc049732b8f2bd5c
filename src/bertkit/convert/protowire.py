"""The protobuf wire format, just what TF's files need: varint, fixed32/64 and bytes fields.

Shared by the checkpoint reader (BundleEntryProto) and the TFRecord reader (tf.train.Example),
so that no protobuf dependency or generated code is needed.
"""

from __future__ import annotations

from collections.abc import Iterator

from bertkit.convert.sstable import TableError, get_varint, put_varint



def proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) for each field: an int (varint, fixed32/64) or bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = get_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = get_varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise TableError("truncated fixed-width field")
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = get_varint(buf, pos)
            if pos + length > len(buf):
                raise TableError("truncated length-delimited field")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise TableError(f"unsupported protobuf wire type {wire}")
        yield number, value


def signed_int64(value: int) -> int:
    """A varint read as unsigned 64-bit, reinterpreted as int64 (two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def put_field(out: bytearray, number: int, value: int | bytes) -> None:
    """Append a varint (int) or length-delimited (bytes) field."""
    if isinstance(value, bytes):
        put_varint(out, number << 3 | 2)
        put_varint(out, len(value))
        out += value
    else:
        put_varint(out, number << 3)
        put_varint(out, value)
