"""Reading pretraining data: bertkit shards or Google's TFRecords, random access, shuffled, by rank.

``PretrainingDataset(path)`` opens a directory written by ``bertkit data create`` (its
manifest.json names the shards), or TFRecord files written by Google's create_pretraining_data.py
(a file, a directory of them, or a glob): their record offsets are indexed once, when opened
(length checksums checked then; the data checksums are not checked on each random read, as
``bertkit.data.tfrecord.iter_records`` does).
Either way ``dataset[i]`` is a dict of numpy arrays, Google's features under the model's names:

    input_ids, token_type_ids, attention_mask   int64 (L,)
    masked_lm_positions, masked_lm_ids          int64 (P,)
    masked_lm_weights                           float32 (P,)
    next_sentence_labels                        int64 ()   0: B follows A, 1: B is random

and ``get_batch(indices)`` gives the same with a leading (B,) axis. Nothing here needs torch; the
class is a map-style dataset for ``torch.utils.data.DataLoader``.

Order: instances are stored in creation order; training reads them through ``order(seed, epoch)``,
a pseudo-random permutation of all N instances (a Feistel network on the index bits with
cycle-walking: O(1) memory, any index computed on its own). This global shuffle replaces Google's
shuffle of the documents and of all instances. ``share(seed, epoch, rank, world_size)`` is one
rank's part of that order: positions rank, rank + W, ... of the first N - N % W, so the ranks get
disjoint shares of equal length; W ranks taking b examples each per step together take positions
[s*b*W, (s+1)*b*W) of the order, so a global batch holds the same examples whatever W is.
``iterate(...)`` walks a rank's shares epoch after epoch and its ``state_dict()`` (epoch, offset)
resumes it exactly.

Dynamic masking: a dataset made with ``--dynamic-masking`` stores unmasked instances; each read
draws a fresh mask for (mask seed, epoch, index), Google's rule (``bertkit.data.masking``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import mmap
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.convert.sstable import crc32c, mask_crc32c
from bertkit.data.masking import (
    MaskRule,
    VocabTables,
    derive_key,
    derive_keys,
    mask_batch,
)
from bertkit.data.shards import Instances, ShardSet
from bertkit.data.tfrecord import decode_example
from bertkit.errors import BertkitError, check_resume_state, file_error
from bertkit.tokenizer import load_vocab

__all__ = ["FORMAT_VERSION", "Permutation", "PretrainingDataset", "PretrainingIterator", "shuffled_order",
           "vocab_checksum"]

FORMAT_VERSION = 1
_PURPOSE_ORDER, _PURPOSE_DYNAMIC_MASK = 3, 2  # keys of derive_key (0, 1: structure and static masks)
_FEISTEL_ROUNDS = 6


def vocab_checksum(vocab: Mapping[str, int]) -> str:
    """sha256 of the vocabulary as a vocab.txt: the tokens in id order, one a line."""
    tokens = sorted(vocab, key=vocab.__getitem__)
    return hashlib.sha256("".join(f"{t}\n" for t in tokens).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- permutation


class Permutation:
    """A keyed pseudo-random permutation of range(n): a balanced Feistel network, cycle-walked.

    ``perm(positions)`` gives the index at each position; no table of n entries is ever built.
    """

    def __init__(self, n: int, key: int):
        self.n = n
        bits = max(2, (max(n, 1) - 1).bit_length())
        self.half = np.uint64((bits + 1) // 2)
        self.low = np.uint64((1 << int(self.half)) - 1)
        self.keys = [np.uint64(derive_key(key, r)) for r in range(_FEISTEL_ROUNDS)]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.low
        for k in self.keys:
            left, right = right, left ^ (derive_keys(right, int(k)) & self.low)
        return (left << self.half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """The permuted index of each position (int64, same shape)."""
        out = self._encrypt(np.asarray(positions, dtype=np.int64).astype(np.uint64))
        outside = out >= np.uint64(self.n)
        while outside.any():  # cycle-walking: a bijection of [0, 2^bits) restricted to [0, n)
            out[outside] = self._encrypt(out[outside])
            outside = out >= np.uint64(self.n)
        return out.astype(np.int64)


def shuffled_order(num_instances: int, seed: int, epoch: int = 0) -> Permutation:
    """The global order of ``num_instances`` instances for (seed, epoch), as a function of positions."""
    return Permutation(num_instances, derive_key(seed, _PURPOSE_ORDER, epoch))


# ----------------------------------------------------------------------------- sources


_TF_HEADER = struct.Struct("<QI")


class _TFRecordSource:
    """TFRecord files of Google's features; the record offsets are indexed when opened."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.maps, self.offsets, self.lengths = [], [], []
        for path in files:
            mapped, offsets, lengths = _index_tfrecord(path)
            self.maps.append(mapped)
            self.offsets.append(offsets)
            self.lengths.append(lengths)
        self.starts = np.cumsum([0] + [len(o) for o in self.offsets])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Google's features of the records at global indices, stacked and renamed."""
        which = np.searchsorted(self.starts, indices, side="right") - 1
        rows = [self._record(int(f), int(i - self.starts[f])) for f, i in zip(which, indices)]
        try:
            return {name: np.stack([r[name] for r in rows]) for name in _TF_NAMES.values()}
        except ValueError:
            raise BertkitError("TFRecord records of different lengths in one batch") from None

    def _record(self, f: int, i: int) -> dict[str, np.ndarray]:
        start = int(self.offsets[f][i])
        raw = self.maps[f][start:start + int(self.lengths[f][i])]
        features = decode_example(raw)
        missing = [k for k in _TF_NAMES if k not in features]
        if missing:
            raise file_error(self.files[f], f"record {i} lacks the feature(s) {', '.join(missing)}")
        out = {_TF_NAMES[k]: features[k].astype(np.int64) for k in _TF_NAMES}
        out["masked_lm_weights"] = features["masked_lm_weights"].astype(np.float32)
        out["next_sentence_labels"] = out["next_sentence_labels"].reshape(())
        return out


_TF_NAMES = {"input_ids": "input_ids", "segment_ids": "token_type_ids", "input_mask": "attention_mask",
             "masked_lm_positions": "masked_lm_positions", "masked_lm_ids": "masked_lm_ids",
             "masked_lm_weights": "masked_lm_weights", "next_sentence_labels": "next_sentence_labels"}


def _index_tfrecord(path: Path) -> tuple[mmap.mmap | bytes, np.ndarray, np.ndarray]:
    """Memory-map a TFRecord file and find each record's data (offset, length); length crcs checked."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as e:
        raise file_error(path, f"cannot read: {e.strerror or e}") from None
    offsets, lengths, pos = [], [], 0
    while pos < size:
        if pos + 12 > size:
            raise file_error(path, f"truncated: record {len(offsets)} has an incomplete header")
        length, length_crc = _TF_HEADER.unpack_from(mapped, pos)
        if mask_crc32c(crc32c(mapped[pos:pos + 8])) != length_crc:
            raise file_error(path, f"not a TFRecord file, or corrupt at record {len(offsets)} (byte {pos})")
        if pos + 16 + length > size:
            raise file_error(path, f"truncated: record {len(offsets)} runs past the end of the file")
        offsets.append(pos + 12)
        lengths.append(length)
        pos += 16 + length
    return mapped, np.array(offsets, dtype=np.int64), np.array(lengths, dtype=np.int64)


def _tfrecord_files(path: str | Path | Sequence[str | Path]) -> list[Path]:
    """A file, a directory of *.tfrecord* files, a glob, or a list of those."""
    if not isinstance(path, (str, Path)):
        return [f for p in path for f in _tfrecord_files(p)]
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and ".tfrecord" in f.name)
    elif p.is_file():
        files = [p]
    else:
        files = [Path(f) for f in sorted(glob.glob(str(path)))]
    if not files:
        raise file_error(path, "no bertkit manifest.json and no TFRecord files here")
    return files


# ----------------------------------------------------------------------------- the dataset


class PretrainingDataset:
    """Pretraining instances with random access, a global shuffle, rank shares and resumable iteration."""

    def __init__(self, path: str | Path | Sequence[str | Path], mask_seed: int | None = None, epoch: int = 0):
        """path: a bertkit data directory, or Google TFRecord files (file, directory, glob or list).

        mask_seed: seed of dynamic masks (default: the data's creation seed); epoch: the epoch
        ``dataset[i]`` reads at (see ``set_epoch``).
        """
        self.path, self.epoch = path, epoch
        self.manifest: dict | None = None
        self.vocab: dict[str, int] | None = None
        single = isinstance(path, (str, Path)) and Path(path).is_dir()
        manifest_path = Path(path) / "manifest.json" if single else None
        if manifest_path is not None and manifest_path.is_file():
            self._open_bertkit(Path(path), manifest_path)
        else:
            self._source: ShardSet | _TFRecordSource = _TFRecordSource(_tfrecord_files(path))
        params = (self.manifest or {}).get("parameters", {})
        self.mask_seed = params.get("seed", 0) if mask_seed is None else mask_seed
        self._first: dict[str, np.ndarray] | None = None

    def __reduce__(self) -> tuple:
        """Pickle as (path, mask_seed, epoch) and reopen: memory maps do not pickle, and a DataLoader
        started with spawn or forkserver sends the dataset to its workers."""
        return (PretrainingDataset, (self.path, self.mask_seed, self.epoch))

    def _open_bertkit(self, directory: Path, manifest_path: Path) -> None:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise file_error(manifest_path, f"cannot read: {e}") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise file_error(manifest_path, f"format version {manifest.get('format_version')!r}; this bertkit "
                                            f"reads version {FORMAT_VERSION}")
        self.manifest = manifest
        if (directory / "vocab.txt").is_file():
            self.vocab = load_vocab(directory / "vocab.txt")
        if manifest["format"] == "tfrecord":
            self._source = _TFRecordSource([directory / entry["file"] for entry in manifest["shards"]])
        else:
            self._source = ShardSet(directory, manifest["shards"])
        if self.dynamic:
            if self.vocab is None:
                raise file_error(directory, "dynamic-masking data needs its vocab.txt, which is missing")
            params = manifest["parameters"]
            self._rule = MaskRule(params["max_predictions_per_seq"], params["masked_lm_prob"], params["whole_word_mask"])
            self._tables = VocabTables.from_vocab(self.vocab, str(directory / "vocab.txt"))

    # -- what the data is

    def __len__(self) -> int:
        return len(self._source)

    @property
    def dynamic(self) -> bool:
        """True if masks are drawn at read time (data made with --dynamic-masking)."""
        return bool((self.manifest or {}).get("parameters", {}).get("dynamic_masking", False))

    @property
    def vocab_size(self) -> int | None:
        """Size of the vocabulary the data was made with (None for Google TFRecords)."""
        return (self.manifest or {}).get("vocab", {}).get("size")

    @property
    def vocab_sha256(self) -> str | None:
        """``vocab_checksum`` of that vocabulary (None for Google TFRecords)."""
        return (self.manifest or {}).get("vocab", {}).get("sha256")

    @property
    def max_token_id(self) -> int:
        """The largest token id in the data (a model's vocab_size must exceed it); scans TFRecords once."""
        if self.manifest is not None and "max_token_id" in self.manifest:
            return int(self.manifest["max_token_id"])
        if not hasattr(self, "_max_id"):
            self._max_id = max((int(b["input_ids"].max(initial=0)) for b in self.batches(4096)), default=0)
        return self._max_id

    @property
    def max_seq_length(self) -> int:
        return int(self._example_shapes()["input_ids"].shape[-1])

    @property
    def max_predictions(self) -> int:
        return int(self._example_shapes()["masked_lm_ids"].shape[-1])

    def _example_shapes(self) -> dict[str, np.ndarray]:
        if self._first is None:
            if len(self) == 0:
                raise BertkitError("the dataset is empty")
            self._first = self.get_batch(np.zeros(1, np.int64))
        return self._first

    def check_vocab(self, vocab_size: int, vocab: Mapping[str, int] | None = None) -> None:
        """Raise BertkitError if this data was made with another vocabulary than a model's."""
        if self.vocab_sha256 is not None and vocab is not None and vocab_checksum(vocab) != self.vocab_sha256:
            raise BertkitError("the pretraining data was made with another vocabulary (vocab checksums differ)")
        if self.max_token_id >= vocab_size:
            raise BertkitError(f"the pretraining data has token id {self.max_token_id}, outside the model's "
                               f"vocabulary of {vocab_size}")

    # -- reading

    def set_epoch(self, epoch: int) -> None:
        """The epoch ``dataset[i]`` reads at: it picks the dynamic masks."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} instances")
        batch = self.get_batch(np.array([index % len(self)], dtype=np.int64))
        return {name: values[0] for name, values in batch.items()}

    def get_batch(self, indices: Sequence[int] | np.ndarray, epoch: int | None = None) -> dict[str, np.ndarray]:
        """The instances at ``indices`` (B,), stacked: the features with a leading (B,) axis."""
        indices = np.asarray(indices, dtype=np.int64)
        if isinstance(self._source, _TFRecordSource):
            return self._source.read(indices)
        instances = self._source.read(indices)
        if self.dynamic:
            instances = self._mask(instances, indices, self.epoch if epoch is None else epoch)
        return instances.features()

    def _mask(self, instances: Instances, indices: np.ndarray, epoch: int) -> Instances:
        keys = derive_keys(self.mask_seed, _PURPOSE_DYNAMIC_MASK, epoch, indices)
        masked = mask_batch(instances.input_ids, instances.lengths, instances.a_lengths, keys, self._rule, self._tables)
        return Instances(masked.input_ids, instances.lengths, instances.a_lengths, instances.next_sentence,
                         masked.counts, masked.positions, masked.labels)

    def batches(self, batch_size: int, epoch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """All instances in storage order, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            yield self.get_batch(np.arange(start, min(start + batch_size, len(self))), epoch)

    # -- order

    def order(self, seed: int, epoch: int = 0) -> np.ndarray:
        """The global shuffled order for (seed, epoch): a permutation of range(N), int64 (N,)."""
        return self.permutation(seed, epoch)(np.arange(len(self)))

    def permutation(self, seed: int, epoch: int = 0) -> Permutation:
        """``order(seed, epoch)`` as a function of positions, computed without the whole array."""
        return shuffled_order(len(self), seed, epoch)

    def share(self, seed: int, epoch: int = 0, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Rank ``rank``'s indices for the epoch: disjoint across ranks, N // world_size each, int64."""
        _check_rank(rank, world_size)
        usable = len(self) - len(self) % world_size
        return self.permutation(seed, epoch)(np.arange(rank, usable, world_size))

    def iterate(self, seed: int, rank: int = 0, world_size: int = 1, epochs: int | None = None) -> PretrainingIterator:
        """An iterator over this rank's shares, epoch after epoch (``epochs`` of them, or forever)."""
        return PretrainingIterator(self, seed, rank, world_size, epochs)


def _check_rank(rank: int, world_size: int) -> None:
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise BertkitError(f"rank must be in 0..world_size-1 and world_size >= 1, not rank {rank} of {world_size}")


class PretrainingIterator:
    """One rank's examples, epoch after epoch, in the dataset's shuffled order; resumable.

    ``state_dict()`` is {seed, rank, world_size, num_instances, epoch, offset}: ``offset`` examples of
    ``epoch`` have been returned. ``load_state_dict`` continues from there exactly.
    """

    def __init__(self, dataset: PretrainingDataset, seed: int, rank: int = 0, world_size: int = 1,
                 epochs: int | None = None):
        _check_rank(rank, world_size)
        self.dataset, self.seed, self.rank, self.world_size, self.epochs = dataset, seed, rank, world_size, epochs
        self.per_epoch = len(dataset) // world_size
        if self.per_epoch == 0:
            raise BertkitError(f"{len(dataset)} instances cannot be shared by {world_size} ranks")
        self.epoch, self.offset = 0, 0
        self._perm: tuple[int, Permutation] | None = None

    def __iter__(self) -> PretrainingIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.next_batch(1)
        return {name: values[0] for name, values in batch.items()}

    def next_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """The next ``batch_size`` examples (fewer only at the very end), stacked; StopIteration when done."""
        if self.epochs is not None and self.epoch >= self.epochs:
            raise StopIteration
        take = min(batch_size, self.per_epoch - self.offset)
        positions = np.arange(self.offset, self.offset + take) * self.world_size + self.rank
        batch = self.dataset.get_batch(self._permutation()(positions), self.epoch)
        self.offset += take
        if self.offset == self.per_epoch:
            self.epoch, self.offset = self.epoch + 1, 0
        if take < batch_size and (self.epochs is None or self.epoch < self.epochs):
            rest = self.next_batch(batch_size - take)
            batch = {name: np.concatenate([batch[name], rest[name]]) for name in batch}
        return batch

    def _permutation(self) -> Permutation:
        if self._perm is None or self._perm[0] != self.epoch:
            self._perm = (self.epoch, self.dataset.permutation(self.seed, self.epoch))
        return self._perm[1]

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "num_instances": len(self.dataset), "epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict()``; the seed, ranks and data must be the same."""
        check_resume_state(state, self.state_dict(), ("seed", "rank", "world_size", "num_instances"), "this iterator")
        if not 0 <= int(state["offset"]) < self.per_epoch or int(state["epoch"]) < 0:
            raise BertkitError(f"cannot resume: bad position epoch={state['epoch']!r} offset={state['offset']!r}")
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
