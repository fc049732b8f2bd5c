"""LevelDB-format tables (SSTables) and crc32c, as TensorFlow's checkpoint index uses them.

A table is: data blocks of sorted (key, value) pairs with prefix-compressed keys and a
restart-point array at the end; an empty metaindex block; an index block with one entry per
data block (a separator key >= every key of that block and < every key of the next, and the
block's (offset, size) handle as two varints); then a 48-byte footer: the metaindex and index
handles, zero padding, and the magic number. Every block is followed by a 5-byte trailer: the
compression type (0: none; TensorFlow's bundle writer never compresses) and the masked crc32c of
the block contents plus that type byte.

The crc32c is vectorised with numpy (about 1 GB/s for large buffers); a pure-Python byte loop
would be some 200 times slower.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import numpy as np

__all__ = [
    "TableError",
    "crc32c",
    "encode_table",
    "get_varint",
    "mask_crc32c",
    "put_varint",
    "read_table",
    "unmask_crc32c",
]

# ----------------------------------------------------------------------------------------------
# crc32c (Castagnoli), reflected polynomial 0x82F63B78, vectorised over numpy lanes.
#
# The CRC register update is linear over GF(2). A buffer of 4*N*L bytes is viewed as an (L, N)
# array of little-endian words; lane j holds words j, j+N, j+2N, ... Each lane's register
# absorbs one word and then jumps over the 4*N bytes to its next word, which is one lookup in
# two 65536-entry tables of that linear map. The N lane registers, read as N words, are then
# themselves a buffer whose crc is the crc of the whole (computed recursively).

_CRC_POLY = 0x82F63B78
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_MAX_LANES = 1 << 16  # lane counts are powers of 16 up to this: few tables to build and cache
_MIN_ROWS = 16  # words per lane at least, so the numpy loop is not all call overhead


def _byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC_POLY if crc & 1 else 0)
        table.append(crc)
    return table


_BYTE_TABLE = _byte_table()


def _apply(matrix: tuple[int, ...], value: int) -> int:
    """Apply a GF(2) 32x32 matrix (given as the images of the 32 unit vectors) to ``value``."""
    out, bit = 0, 0
    while value:
        if value & 1:
            out ^= matrix[bit]
        value >>= 1
        bit += 1
    return out


@functools.cache
def _zeros_operator(log2_bytes: int) -> tuple[int, ...]:
    """The linear map that advances a CRC register over 2**log2_bytes zero bytes."""
    if log2_bytes == 0:
        return tuple((1 << bit >> 8) ^ _BYTE_TABLE[(1 << bit) & 0xFF] for bit in range(32))
    half = _zeros_operator(log2_bytes - 1)
    return tuple(_apply(half, column) for column in half)


def _advance(register: int, nbytes: int) -> int:
    """The register after ``nbytes`` zero bytes."""
    k = 0
    while nbytes:
        if nbytes & 1:
            register = _apply(_zeros_operator(k), register)
        nbytes >>= 1
        k += 1
    return register


@functools.cache
def _lane_tables(stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Tables of "xor a word into the register, then advance ``stride`` bytes", by 16-bit half."""
    images = [_advance(1 << bit, stride) for bit in range(32)]
    low = np.zeros(1 << 16, dtype=np.uint32)
    high = np.zeros(1 << 16, dtype=np.uint32)
    for bit in range(16):
        span = 1 << bit
        low[span : 2 * span] = low[:span] ^ np.uint32(images[bit])
        high[span : 2 * span] = high[:span] ^ np.uint32(images[16 + bit])
    return low, high


def _lane_registers(words: np.ndarray) -> np.ndarray:
    """Registers (from 0) of the N lanes of ``words`` (L, N), each left just after its last word."""
    rows, lanes = words.shape
    low, high = _lane_tables(4 * lanes)
    register = np.zeros(lanes, dtype=np.uint32)
    scratch = np.empty(lanes, dtype=np.uint32)
    upper = np.empty(lanes, dtype=np.uint32)
    for row in range(rows - 1):
        np.bitwise_xor(register, words[row], out=register)
        np.bitwise_and(register, 0xFFFF, out=scratch)
        np.right_shift(register, 16, out=register)
        high.take(register, out=upper)
        low.take(scratch, out=register)
        np.bitwise_xor(register, upper, out=register)
    return register ^ words[rows - 1]


def _crc_update(register: int, data: np.ndarray) -> int:
    """Run the raw CRC register (no pre/post inversion) over ``data`` (1-D uint8)."""
    if len(data) < 4 * _MIN_ROWS:
        for byte in data.tobytes():
            register = (register >> 8) ^ _BYTE_TABLE[(register ^ byte) & 0xFF]
        return register
    words = len(data) // 4
    lanes = min(_MAX_LANES, 1 << (((words // _MIN_ROWS).bit_length() - 1) // 4 * 4))
    body = 4 * lanes * (words // lanes)
    grid = data[:body].view("<u4").reshape(-1, lanes)  # (L, N)
    lane_bytes = _lane_registers(grid).astype("<u4").view(np.uint8)
    register = _advance(register, body) ^ _crc_update(0, lane_bytes)
    return _crc_update(register, data[body:])


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The crc32c (Castagnoli) of ``data``'s bytes, as an unsigned 32-bit int."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    buffer = np.ascontiguousarray(buffer).reshape(-1).view(np.uint8)
    return _crc_update(_U32, buffer) ^ _U32


def mask_crc32c(crc: int) -> int:
    """LevelDB/TensorFlow's masked form of a crc, used wherever a crc is stored in a file."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask_crc32c(masked: int) -> int:
    """The crc whose masked form is ``masked``."""
    rotated = (masked - _MASK_DELTA) & _U32
    return ((rotated >> 17) | (rotated << 15)) & _U32


# ----------------------------------------------------------------------------------------------
# Varints (LevelDB's and protobuf's base-128 integers).


class TableError(ValueError):
    """Malformed table or protobuf bytes; the caller turns it into a BertkitError naming the file."""


def get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``buf[pos:]``; TableError if malformed."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise TableError("bad varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` as a varint (a negative one as protobuf's 64-bit two's complement)."""
    value &= (1 << 64) - 1  # negative int64 values are ten-byte two's complement
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


# ----------------------------------------------------------------------------------------------
# The SSTable (LevelDB table format, as TensorFlow's table builder writes it).

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
_TRAILER_SIZE = 5  # compression type byte + masked crc32c
BLOCK_SIZE = 262144  # TensorFlow's target size of a data block
_RESTART_INTERVAL = 16  # keys between full (not prefix-compressed) keys in a data block


def _read_block(buf: bytes, handle: bytes) -> bytes:
    """The contents of the block at ``handle`` (varint offset, varint size), trailer verified."""
    offset, pos = get_varint(handle, 0)
    size, _ = get_varint(handle, pos)
    end = offset + size
    if end + _TRAILER_SIZE > len(buf) - _FOOTER_SIZE:
        raise TableError(f"block at offset {offset} runs past the end of the table")
    stored = int.from_bytes(buf[end + 1 : end + _TRAILER_SIZE], "little")
    if crc32c(buf[offset : end + 1]) != unmask_crc32c(stored):
        raise TableError(f"checksum mismatch in the block at offset {offset}")
    if buf[end] != 0:
        raise TableError(f"compressed block (type {buf[end]}) at offset {offset}; not supported")
    return buf[offset:end]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield the (key, value) pairs of a block, undoing the prefix compression."""
    if len(block) < 4:
        raise TableError("block too short")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 * (num_restarts + 1)
    if num_restarts < 1 or limit < 0:
        raise TableError("bad restart array")
    key, pos = b"", 0
    while pos < limit:
        shared, pos = get_varint(block, pos)
        unshared, pos = get_varint(block, pos)
        value_size, pos = get_varint(block, pos)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise TableError("bad block entry")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


def _handle_end(buf: bytes, pos: int) -> int:
    """Where the block handle (two varints) starting at ``pos`` ends."""
    _, pos = get_varint(buf, pos)
    return get_varint(buf, pos)[1]


def read_table(buf: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield every (key, value) of the SSTable held in ``buf``, in key order.

    Verifies the footer magic, every block's trailer crc, the key order, and that each index
    key bounds its block (what a reader's seek relies on); TableError if not.
    """
    if len(buf) < _FOOTER_SIZE:
        raise TableError("too short for an SSTable (no footer)")
    footer = buf[-_FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise TableError("not an SSTable (bad magic number)")
    metaindex_end = _handle_end(footer, 0)
    index_end = _handle_end(footer, metaindex_end)
    _read_block(buf, footer[:metaindex_end])  # the metaindex block: empty, but checksummed
    previous, bound = None, None
    for separator, handle in _block_entries(_read_block(buf, footer[metaindex_end:index_end])):
        for key, value in _block_entries(_read_block(buf, handle)):
            if previous is not None and key <= previous:
                raise TableError("keys out of order")
            if key > separator or (bound is not None and key <= bound):
                raise TableError("an index key does not bound its data block")
            previous = key
            yield key, value
        bound = separator


class _BlockBuilder:
    """Accumulates sorted (key, value) pairs into one block with prefix-compressed keys."""

    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.buffer = bytearray()
        self.restarts = [0]
        self.count = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count < self.restart_interval:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.count = 0
        for number in (shared, len(key) - shared, len(value)):
            put_varint(self.buffer, number)
        self.buffer += key[shared:] + value
        self.last_key = key
        self.count += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        restarts = b"".join(r.to_bytes(4, "little") for r in self.restarts)
        return bytes(self.buffer) + restarts + len(self.restarts).to_bytes(4, "little")


def _append_block(out: bytearray, contents: bytes) -> bytes:
    """Append a block and its trailer to ``out``; return its encoded handle."""
    handle = bytearray()
    put_varint(handle, len(out))
    put_varint(handle, len(contents))
    crc = crc32c(contents + b"\x00")
    out += contents + b"\x00" + mask_crc32c(crc).to_bytes(4, "little")
    return bytes(handle)


def _separator(start: bytes, limit: bytes) -> bytes:
    """A short key k with start <= k < limit (LevelDB's FindShortestSeparator)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)):
        byte = start[common]
        if byte < 0xFF and byte + 1 < limit[common]:
            return start[:common] + bytes([byte + 1])
    return start


def _successor(key: bytes) -> bytes:
    """A short key >= ``key`` (LevelDB's FindShortSuccessor)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def encode_table(items: Iterable[tuple[bytes, bytes]], block_size: int = BLOCK_SIZE) -> bytes:
    """An uncompressed SSTable of ``items`` (sorted by key, keys unique), laid out block for
    block as TensorFlow's table builder lays it out."""
    out, block, index = bytearray(), _BlockBuilder(_RESTART_INTERVAL), _BlockBuilder(1)
    pending: bytes | None = None  # handle of the last flushed block, awaiting its index key
    last_key = b""
    for number, (key, value) in enumerate(items):
        if number and key <= last_key:
            raise ValueError(f"table keys must be sorted and unique: {key!r} after {last_key!r}")
        if block.count and len(key) + len(value) >= 2 * block_size:
            pending = _append_block(out, block.finish())
            block = _BlockBuilder(_RESTART_INTERVAL)
        if pending is not None:
            index.add(_separator(last_key, key), pending)
            pending = None
        block.add(key, value)
        last_key = key
        if block.size_estimate() >= block_size:
            pending = _append_block(out, block.finish())
            block = _BlockBuilder(_RESTART_INTERVAL)
    if block.count:
        pending = _append_block(out, block.finish())
    metaindex = _append_block(out, _BlockBuilder(_RESTART_INTERVAL).finish())
    if pending is not None:
        index.add(_successor(last_key), pending)
    footer = bytearray(metaindex + _append_block(out, index.finish()))
    footer += bytes(_FOOTER_SIZE - 8 - len(footer)) + _TABLE_MAGIC.to_bytes(8, "little")
    return bytes(out + footer)
