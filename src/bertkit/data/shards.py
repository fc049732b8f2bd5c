"""The bertkit pretraining shard: one file of flat little-endian arrays, read by memory-mapping.

Layout (format version 1)::

    header, 64 bytes: magic b"BKPTSHRD", u32 version, u32 flags (1: unmasked, for dynamic masking;
                      2: token ids are int32, else uint16), u64 N instances, u64 T tokens,
                      u64 P predictions, u32 max_seq_length, u32 max_predictions, u32 largest
                      token id (tokens and labels), zeros
    sections, each starting at a multiple of 64 bytes, in this order:
      tokens          T    uint16|int32  the instances back to back, [CLS] A [SEP] B [SEP], unpadded;
                                         masked (Google's input_ids) unless the shard is unmasked
      token_offsets   N+1  int64         instance i is tokens[token_offsets[i]:token_offsets[i+1]]
      a_lengths       N    uint16        length of [CLS] A [SEP]: token_type_ids are 1 from there
      next_sentence   N    uint8         1 if B is a random segment of another document
      pred_offsets    N+1  int64         instance i's predictions are pred_*[pred_offsets[i]:pred_offsets[i+1]]
      pred_positions  P    uint16        masked positions, ascending within an instance
      pred_ids        P    uint16|int32  the original ids at those positions (Google's masked_lm_ids)

An unmasked shard has P = 0. A shard is written section by section to temporary files and
assembled under a temporary name, then renamed: a shard file that exists is complete, and its size
is checked against its header when opened.
"""

from __future__ import annotations

import contextlib
import mmap
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from bertkit.errors import file_error
from bertkit.io import atomic_open

__all__ = ["Instances", "Shard", "ShardSet", "ShardWriter", "shard_info", "shard_name"]

MAGIC = b"BKPTSHRD"
VERSION = 1
FLAG_UNMASKED, FLAG_INT32 = 1, 2
_HEADER = struct.Struct("<8sIIQQQIII")
_HEADER_SIZE = 64
_ALIGN = 64
_SECTIONS = ("tokens", "token_offsets", "a_lengths", "next_sentence", "pred_offsets", "pred_positions", "pred_ids")


def shard_name(index: int) -> str:
    """``shard-00000.bin``, ..."""
    return f"shard-{index:05d}.bin"


@dataclass
class Instances:
    """B instances as padded rows: what shards store and datasets return."""

    input_ids: np.ndarray  # int64 (B, L): [CLS] A [SEP] B [SEP], masked or not, 0-padded
    lengths: np.ndarray  # int64 (B,): real tokens
    a_lengths: np.ndarray  # int64 (B,): length of [CLS] A [SEP]
    next_sentence: np.ndarray  # int64 (B,): 1 if B is random
    counts: np.ndarray  # int64 (B,): masked slots used (0 when unmasked)
    positions: np.ndarray  # int64 (B, P): masked positions ascending, then 0
    labels: np.ndarray  # int64 (B, P): original ids there, then 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def features(self) -> dict[str, np.ndarray]:
        """Google's features under the model's names: input_ids, token_type_ids, attention_mask
        (B, L) int64; masked_lm_positions, masked_lm_ids (B, P) int64; masked_lm_weights (B, P)
        float32; next_sentence_labels (B,) int64 (0: B follows A, 1: B is random)."""
        col = np.arange(self.input_ids.shape[1])[None, :]
        real = col < self.lengths[:, None]
        slots = np.arange(self.positions.shape[1])[None, :] < self.counts[:, None]
        return {
            "input_ids": self.input_ids,
            "token_type_ids": (real & (col >= self.a_lengths[:, None])).astype(np.int64),
            "attention_mask": real.astype(np.int64),
            "masked_lm_positions": self.positions,
            "masked_lm_ids": self.labels,
            "masked_lm_weights": slots.astype(np.float32),
            "next_sentence_labels": self.next_sentence,
        }


@dataclass(frozen=True)
class _Header:
    flags: int
    instances: int
    tokens: int
    predictions: int
    max_seq_length: int
    max_predictions: int
    max_token_id: int

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype("<i4") if self.flags & FLAG_INT32 else np.dtype("<u2")

    def sections(self) -> dict[str, tuple[int, np.dtype, int]]:
        """name -> (byte offset, dtype, count), and the total file size under "end"."""
        n, tok = self.instances, self.token_dtype
        specs = [(tok, self.tokens), (np.dtype("<i8"), n + 1), (np.dtype("<u2"), n), (np.dtype("u1"), n),
                 (np.dtype("<i8"), n + 1), (np.dtype("<u2"), self.predictions), (tok, self.predictions)]
        out, offset = {}, _HEADER_SIZE
        for name, (dtype, count) in zip(_SECTIONS, specs):
            out[name] = (offset, dtype, count)
            offset += -(-dtype.itemsize * count // _ALIGN) * _ALIGN
        out["end"] = (offset, np.dtype("u1"), 0)
        return out

    def pack(self) -> bytes:
        raw = _HEADER.pack(MAGIC, VERSION, self.flags, self.instances, self.tokens, self.predictions,
                           self.max_seq_length, self.max_predictions, self.max_token_id)
        return raw.ljust(_HEADER_SIZE, b"\0")


class ShardWriter:
    """Writes one shard; use as a context manager. The file appears, complete, on ``close()``."""

    def __init__(self, path: str | Path, token_dtype: np.dtype, max_seq_length: int, max_predictions: int,
                 unmasked: bool):
        self.path = Path(path)
        self.dtype = np.dtype(token_dtype).newbyteorder("<")
        self.flags = (FLAG_UNMASKED if unmasked else 0) | (FLAG_INT32 if self.dtype.itemsize == 4 else 0)
        self.max_seq_length, self.max_predictions = max_seq_length, max_predictions
        self.instances = self.tokens = self.predictions = self.max_token_id = 0
        self._parts = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".parts", dir=self.path.parent))
        self._stack = contextlib.ExitStack()
        self._files: dict[str, BinaryIO] = {name: self._stack.enter_context(open(self._parts / name, "wb"))
                                            for name in _SECTIONS}
        np.zeros(1, "<i8").tofile(self._files["token_offsets"])
        np.zeros(1, "<i8").tofile(self._files["pred_offsets"])

    def add(self, batch: Instances) -> None:
        """Append a batch of instances."""
        real = np.arange(batch.input_ids.shape[1])[None, :] < batch.lengths[:, None]
        slots = np.arange(batch.positions.shape[1])[None, :] < batch.counts[:, None]
        tokens, labels = batch.input_ids[real], batch.labels[slots]
        self.max_token_id = max(self.max_token_id, int(tokens.max(initial=0)), int(labels.max(initial=0)))
        write = {
            "tokens": tokens.astype(self.dtype),
            "token_offsets": (self.tokens + np.cumsum(batch.lengths)).astype("<i8"),
            "a_lengths": batch.a_lengths.astype("<u2"),
            "next_sentence": batch.next_sentence.astype("u1"),
            "pred_offsets": (self.predictions + np.cumsum(batch.counts)).astype("<i8"),
            "pred_positions": batch.positions[slots].astype("<u2"),
            "pred_ids": labels.astype(self.dtype),
        }
        for name, values in write.items():
            values.tofile(self._files[name])
        self.instances += len(batch)
        self.tokens += len(tokens)
        self.predictions += len(labels)

    def close(self) -> dict:
        """Assemble the shard and move it into place; returns its entry for the manifest."""
        self._stack.close()
        header = _Header(self.flags, self.instances, self.tokens, self.predictions, self.max_seq_length,
                         self.max_predictions, self.max_token_id)
        sections = header.sections()
        with atomic_open(self.path, "wb") as out:
            out.write(header.pack())
            for name in _SECTIONS:
                out.seek(sections[name][0])
                with open(self._parts / name, "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
            out.truncate(sections["end"][0])
        shutil.rmtree(self._parts, ignore_errors=True)
        return _entry(self.path, header)

    def abort(self) -> None:
        self._stack.close()
        shutil.rmtree(self._parts, ignore_errors=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if error is not None:
            self.abort()


class Shard:
    """One shard opened read-only: its sections as arrays over a memory map."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.header = _read_header(self.path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        arrays = {name: np.frombuffer(self._map, dtype, count, offset)
                  for name, (offset, dtype, count) in self.header.sections().items() if name != "end"}
        self.tokens, self.token_offsets = arrays["tokens"], arrays["token_offsets"]
        self.a_lengths, self.next_sentence = arrays["a_lengths"], arrays["next_sentence"]
        self.pred_offsets, self.pred_positions, self.pred_ids = (arrays["pred_offsets"], arrays["pred_positions"],
                                                                 arrays["pred_ids"])

    def __len__(self) -> int:
        return self.header.instances

    @property
    def unmasked(self) -> bool:
        return bool(self.header.flags & FLAG_UNMASKED)

    def read(self, local: np.ndarray) -> Instances:
        """Instances at shard-local indices (B,), padded to max_seq_length and max_predictions."""
        local = np.asarray(local, dtype=np.int64)
        start, lengths = _spans(self.token_offsets, local)
        ids = _gather(self.tokens, start, lengths, self.header.max_seq_length)
        p_start, counts = _spans(self.pred_offsets, local)
        positions = _gather(self.pred_positions, p_start, counts, self.header.max_predictions)
        labels = _gather(self.pred_ids, p_start, counts, self.header.max_predictions)
        return Instances(ids, lengths, self.a_lengths[local].astype(np.int64),
                         self.next_sentence[local].astype(np.int64), counts, positions, labels)


class ShardSet:
    """Shards read as one sequence of instances: the shards of a manifest, in its order."""

    def __init__(self, directory: str | Path, entries: list[dict]):
        """entries: the manifest's shard entries ({"file", "instances", ...})."""
        self.shards = [Shard(Path(directory) / entry["file"]) for entry in entries]
        for shard, entry in zip(self.shards, entries):
            if len(shard) != entry["instances"]:
                raise file_error(shard.path, f"holds {len(shard)} instances, the manifest says {entry['instances']}")
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, indices: np.ndarray) -> Instances:
        """Instances at global indices (B,), in that order."""
        which = np.searchsorted(self.starts, indices, side="right") - 1
        parts, where = [], []
        for s in np.unique(which).tolist():
            rows = np.flatnonzero(which == s)
            parts.append(self.shards[s].read(indices[rows] - self.starts[s]))
            where.append(rows)
        return _concat(parts, np.concatenate(where) if where else np.zeros(0, np.int64))


def _concat(parts: list[Instances], rows: np.ndarray) -> Instances:
    """Instances from parts, put back in the order ``rows`` says (rows[k]: the output row of part row k)."""
    names = ("input_ids", "lengths", "a_lengths", "next_sentence", "counts", "positions", "labels")
    out = {}
    for name in names:
        stacked = np.concatenate([getattr(p, name) for p in parts])
        out[name] = np.empty_like(stacked)
        out[name][rows] = stacked
    return Instances(**out)


def _read_header(path: Path) -> _Header:
    try:
        with open(path, "rb") as f:
            raw = f.read(_HEADER_SIZE)
            size = f.seek(0, 2)
    except OSError as e:
        raise file_error(path, f"cannot read: {e.strerror or e}") from None
    if len(raw) < _HEADER.size or raw[:8] != MAGIC:
        raise file_error(path, "not a bertkit pretraining shard")
    _, version, *fields = _HEADER.unpack_from(raw)
    if version != VERSION:
        raise file_error(path, f"shard format version {version}; this bertkit reads version {VERSION}")
    header = _Header(*fields)
    if size != header.sections()["end"][0]:
        raise file_error(path, f"incomplete or corrupt shard: {size} bytes, its header says "
                               f"{header.sections()['end'][0]}")
    return header


def shard_info(path: str | Path) -> dict | None:
    """The manifest entry of a complete shard already on disk, or None if it is missing or damaged."""
    try:
        header = _read_header(Path(path))
    except Exception:  # noqa: BLE001 - any damage means: make it again
        return None
    return _entry(Path(path), header)


def _entry(path: Path, header: _Header) -> dict:
    return {"file": path.name, "instances": header.instances, "tokens": header.tokens,
            "predictions": header.predictions, "bytes": header.sections()["end"][0],
            "max_token_id": header.max_token_id}


def _spans(offsets: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    start = offsets[local]
    return start, offsets[local + 1] - start


def _gather(values: np.ndarray, start: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Rows values[start:start+length], zero-padded to width: int64 (B, width)."""
    col = np.arange(width)[None, :]
    inside = col < lengths[:, None]
    if len(values) == 0:
        return np.zeros(inside.shape, np.int64)
    where = np.minimum(start[:, None] + col, len(values) - 1)
    return np.where(inside, values[where], 0).astype(np.int64)
