"""``bertkit data create``: text to masked-LM / next-sentence pretraining data, parallel and deterministic.

Pass 1 (``bertkit.data.corpus``) tokenizes the input files on all workers into an on-disk token
store. Pass 2 cuts the documents into shards of consecutive documents (the cut depends on the
corpus only) and makes each shard in a worker: for every dupe round and document, Google's pairs
(``bertkit.data.instances``) with a ``random.Random`` seeded from (seed, round, document), masked
(``bertkit.data.masking``) with a key from (seed, round, document, instance). Random-next segments
are read through the memory-mapped store, so memory stays flat as the corpus grows; the output is
the same, byte for byte, for any number of workers.

Differences from Google's create_pretraining_data.py, by design:

* Google shuffles the documents and, at the end, all instances in memory. Here instances are stored
  in creation order (shard, round, document, position) and read through the dataset's global
  shuffle, ``PretrainingDataset.order(seed, epoch)``; ``--format tfrecord`` writes the records in
  ``order(seed, 0)``. Statistically the instances are the same; the random streams are not.
* A file boundary also ends a document (see ``bertkit.data.corpus``).
* ``google_rng=True`` instead makes Google's exact sequence of ``random.Random(seed)`` calls in one
  process (documents shuffled, then pairs and masks, then the final shuffle) and writes the
  instances in Google's order: with Google's tokenization it reproduces Google's records exactly.

The output directory: ``shard-NNNNN.bin`` (``bertkit.data.shards``) or ``shard-NNNNN.tfrecord``,
``vocab.txt`` (a copy of the vocabulary) and ``manifest.json``, written last. A run in progress
keeps its state in ``.work/``; an interrupted run resumes when started again with the same inputs
and parameters (complete shards are kept, as every file appears only when complete) and restarts
cleanly otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertkit.data.corpus import (
    TokenStore,
    build_token_store,
    expand_inputs,
    token_dtype,
)
from bertkit.data.dataset import FORMAT_VERSION, shuffled_order, vocab_checksum
from bertkit.data.instances import DocumentIndex, Pair, build_rows, document_pairs
from bertkit.data.masking import (
    MaskRule,
    VocabTables,
    derive_key,
    derive_keys,
    google_mask,
    mask_batch,
)
from bertkit.data.shards import Instances, ShardSet, ShardWriter, shard_info, shard_name
from bertkit.data.tfrecord import RecordWriter, encode_example
from bertkit.data.workers import ordered_map
from bertkit.errors import BertkitError, file_error
from bertkit.io import atomic_write_bytes, atomic_write_text
from bertkit.tokenizer import BertTokenizer, load_tokenizer

__all__ = ["CreateConfig", "create_pretraining_data"]

FORMATS = ("bertkit", "tfrecord")
_PURPOSE_STRUCTURE, _PURPOSE_MASK = 0, 1  # derive_key purposes (dataset.py uses 2 and 3)
_MIN_SHARD_TOKENS = 1 << 18  # input tokens per shard, at least
_MAX_SHARDS = 256  # above this many shards, shards grow instead
_BATCH = 2048  # instances built and masked at once
_WORK = ".work"


@dataclass(frozen=True)
class CreateConfig:
    """The parameters of a run: Google's flags, and bertkit's options."""

    max_seq_length: int = 128  # tokens per instance, [CLS] and [SEP]s included
    max_predictions_per_seq: int = 20  # masked slots per instance
    masked_lm_prob: float = 0.15  # share of tokens masked
    dupe_factor: int = 10  # passes over the corpus, each with other pairs and masks
    short_seq_prob: float = 0.1  # chance that a (document, pass) gets a random shorter target length
    whole_word_mask: bool = False  # mask all pieces of a word together
    seed: int = 12345  # everything random follows from it
    dynamic_masking: bool = False  # store unmasked instances; masks are drawn when read, per epoch
    output_format: str = "bertkit"  # "bertkit" shards or Google's "tfrecord" layout
    google_rng: bool = False  # Google's exact random calls, one process (see the module docstring)

    def __post_init__(self) -> None:
        if not isinstance(self.max_seq_length, int) or not 5 <= self.max_seq_length <= 65535:
            raise BertkitError(f"max_seq_length must be an integer in 5..65535, not {self.max_seq_length!r}")
        if self.max_predictions_per_seq > self.max_seq_length - 3:
            raise BertkitError(f"max_predictions_per_seq {self.max_predictions_per_seq} is more than a sequence of "
                               f"{self.max_seq_length} tokens can hold ({self.max_seq_length - 3} maskable)")
        self.mask_rule()  # checks max_predictions_per_seq and masked_lm_prob
        if not isinstance(self.dupe_factor, int) or self.dupe_factor < 1:
            raise BertkitError(f"dupe_factor must be an integer >= 1, not {self.dupe_factor!r}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise BertkitError(f"short_seq_prob must be in [0, 1], not {self.short_seq_prob!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise BertkitError(f"seed must be an integer >= 0, not {self.seed!r}")
        if self.output_format not in FORMATS:
            raise BertkitError(f"format must be one of {', '.join(FORMATS)}, not {self.output_format!r}")
        if self.dynamic_masking and (self.output_format != "bertkit" or self.google_rng):
            raise BertkitError("dynamic masking needs --format bertkit and cannot go with --google-rng")

    def mask_rule(self) -> MaskRule:
        return MaskRule(self.max_predictions_per_seq, self.masked_lm_prob, self.whole_word_mask)


@dataclass(frozen=True)
class _Context:
    """What a pass-2 worker needs (pickled once per worker)."""

    config: CreateConfig
    tables: VocabTables
    store_dir: Path
    shard_dir: Path
    dtype: np.dtype


# ----------------------------------------------------------------------------- output directory


def _fingerprint(config: CreateConfig, files: list[Path], vocab_sha: str, lower_case: bool) -> str:
    """What a resumed run must share with the interrupted one."""
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    state = [asdict(config), stats, vocab_sha, lower_case, FORMAT_VERSION]
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()


_FINISHED = r"(?:shard-\d{5}\.(?:bin|tfrecord)|manifest\.json|vocab\.txt)"
_OURS = re.compile(rf"{_FINISHED}|\.{_FINISHED}\..+\.(?:tmp|parts)|{re.escape(_WORK)}")


def _ours(path: Path) -> bool:
    """A name this pipeline writes: finished files, their temporary files, the work directory."""
    return _OURS.fullmatch(path.name) is not None


def _clear(out: Path) -> None:
    for path in out.iterdir():
        if _ours(path):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _prepare_output(out: Path, fingerprint: str, overwrite: bool) -> bool:
    """Make ``out`` ready; True if an interrupted run of the same job is resumed."""
    if out.exists() and not out.is_dir():
        raise file_error(out, "exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    foreign = [p.name for p in out.iterdir() if not _ours(p)]
    if foreign:
        raise file_error(out, f"holds files bertkit did not write ({', '.join(sorted(foreign)[:3])}); "
                              "use an empty or new directory")
    if (out / "manifest.json").exists() and not overwrite:
        raise file_error(out, "already holds finished pretraining data (manifest.json); pass --overwrite to replace it")
    run = out / _WORK / "run.json"
    resume = not overwrite and run.is_file() and run.read_text(encoding="utf-8").strip() == fingerprint
    if not resume:
        _clear(out)
    for folder in (out, out / _WORK, out / _WORK / "shards"):  # temporary files of an interrupted run
        for path in folder.glob(".*") if folder.is_dir() else ():
            if path.name.endswith((".tmp", ".parts")):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out / _WORK).mkdir(exist_ok=True)
    atomic_write_text(run, fingerprint)
    return resume


# ----------------------------------------------------------------------------- pass 2: shards


def _plan_shards(store: TokenStore) -> list[tuple[int, int, int]]:
    """(shard index, first document, end document): consecutive documents, >= the shard size in tokens."""
    doc_tokens = store.document_tokens()
    size = max(_MIN_SHARD_TOKENS, int(doc_tokens.sum()) // _MAX_SHARDS + 1)
    plan, first, total = [], 0, 0
    for d, n in enumerate(doc_tokens.tolist()):
        total += n
        if total >= size or d == len(doc_tokens) - 1:
            plan.append((len(plan), first, d + 1))
            first, total = d + 1, 0
    return plan


@functools.lru_cache(maxsize=2)
def _open_store(directory: Path) -> TokenStore:
    return TokenStore(directory)


def _unmasked(ids: np.ndarray, lengths: np.ndarray, a_lengths: np.ndarray, random_next: np.ndarray,
              width: int) -> Instances:
    zeros = np.zeros((len(ids), width), np.int64)
    return Instances(ids, lengths, a_lengths, random_next, np.zeros(len(ids), np.int64), zeros, zeros.copy())


def _finish(ctx: _Context, store: TokenStore, pairs: list[Pair], keys: list[tuple[int, int, int]]) -> Instances:
    """Rows of the pairs, masked with their (round, document, position) keys unless dynamic."""
    c = ctx.config
    ids, lengths, a_lengths = build_rows(store.tokens, pairs, c.max_seq_length, ctx.tables.cls_id,
                                         ctx.tables.sep_id, ctx.tables.pad_id)
    random_next = np.array([p.is_random_next for p in pairs], dtype=np.int64)
    if c.dynamic_masking:
        return _unmasked(ids, lengths, a_lengths, random_next, c.max_predictions_per_seq)
    rounds, docs, positions = np.array(keys, dtype=np.int64).reshape(-1, 3).T
    row_keys = derive_keys(c.seed, _PURPOSE_MASK, rounds, docs, positions)
    m = mask_batch(ids, lengths, a_lengths, row_keys, c.mask_rule(), ctx.tables)
    return Instances(m.input_ids, lengths, a_lengths, random_next, m.counts, m.positions, m.labels)


def _make_shard(ctx: _Context, task: tuple[int, int, int]) -> dict:
    """Write one shard (all dupe rounds of its documents) unless a complete one is already there."""
    index, first, end = task
    path = ctx.shard_dir / shard_name(index)
    done = shard_info(path)
    if done is not None:
        return done
    store, c = _open_store(ctx.store_dir), ctx.config
    docs = DocumentIndex(store.segments, store.documents)
    with ShardWriter(path, ctx.dtype, c.max_seq_length, c.max_predictions_per_seq, c.dynamic_masking) as writer:
        pairs: list[Pair] = []
        keys: list[tuple[int, int, int]] = []
        for rnd in range(c.dupe_factor):
            for d in range(first, end):
                rng = random.Random(derive_key(c.seed, _PURPOSE_STRUCTURE, rnd, d))
                for k, pair in enumerate(document_pairs(docs, d, c.max_seq_length, c.short_seq_prob, rng)):
                    pairs.append(pair)
                    keys.append((rnd, d, k))
                if len(pairs) >= _BATCH:
                    writer.add(_finish(ctx, store, pairs, keys))
                    pairs, keys = [], []
        if pairs:
            writer.add(_finish(ctx, store, pairs, keys))
        return writer.close()


def _make_shards(ctx: _Context, store: TokenStore, workers: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    plan = _plan_shards(store)
    doc_tokens = np.concatenate([[0], np.cumsum(store.document_tokens())])
    entries = []
    with tqdm(total=int(doc_tokens[-1]), unit="tok", unit_scale=True, desc="instances",
              disable=not progress or None, file=sys.stderr) as bar:
        for (_, first, end), entry in zip(plan, ordered_map(_make_shard, plan, ctx, workers)):
            entries.append(entry)
            bar.update(int(doc_tokens[end] - doc_tokens[first]))
    return entries


# ----------------------------------------------------------------------------- Google's random stream


def _google_shard(ctx: _Context, store: TokenStore, path: Path) -> tuple[dict, list[int]]:
    """Google's run on one random.Random(seed): the instances in creation order, and Google's final order."""
    c, rule = ctx.config, ctx.config.mask_rule()
    rng = random.Random(c.seed)
    order = list(range(store.num_documents))
    rng.shuffle(order)  # Google's rng.shuffle(all_documents)
    docs = DocumentIndex(store.segments, store.documents, order)
    with ShardWriter(path, ctx.dtype, c.max_seq_length, c.max_predictions_per_seq, False) as writer:
        rows: list[tuple[list[int], int, int, list[int], list[int]]] = []
        for _ in range(c.dupe_factor):
            for d in range(len(docs)):
                for pair in document_pairs(docs, d, c.max_seq_length, c.short_seq_prob, rng):
                    a, b = store.tokens[pair.a_start:pair.a_end].tolist(), store.tokens[pair.b_start:pair.b_end].tolist()
                    tokens = [ctx.tables.cls_id, *a, ctx.tables.sep_id, *b, ctx.tables.sep_id]
                    masked, positions, labels = google_mask(tokens, len(a) + 2, rule, ctx.tables, rng)
                    rows.append((masked, len(a) + 2, int(pair.is_random_next), positions, labels))
                if len(rows) >= _BATCH:
                    writer.add(_rows_to_instances(rows, c))
                    rows = []
        if rows:
            writer.add(_rows_to_instances(rows, c))
        entry = writer.close()
    final = list(range(entry["instances"]))
    rng.shuffle(final)  # Google's rng.shuffle(instances)
    return entry, final


def _rows_to_instances(rows: list, c: CreateConfig) -> Instances:
    b, width, p = len(rows), c.max_seq_length, c.max_predictions_per_seq
    ids, positions, labels = np.zeros((b, width), np.int64), np.zeros((b, p), np.int64), np.zeros((b, p), np.int64)
    for i, (masked, _, _, pos, lab) in enumerate(rows):
        ids[i, :len(masked)], positions[i, :len(pos)], labels[i, :len(lab)] = masked, pos, lab
    lengths = np.array([len(r[0]) for r in rows], np.int64)
    counts = np.array([len(r[3]) for r in rows], np.int64)
    return Instances(ids, lengths, np.array([r[1] for r in rows], np.int64), np.array([r[2] for r in rows], np.int64),
                     counts, positions, labels)


# ----------------------------------------------------------------------------- writing in an order


_GOOGLE_NAMES = {"input_ids": "input_ids", "attention_mask": "input_mask", "token_type_ids": "segment_ids",
                 "masked_lm_positions": "masked_lm_positions", "masked_lm_ids": "masked_lm_ids",
                 "masked_lm_weights": "masked_lm_weights", "next_sentence_labels": "next_sentence_labels"}


def _write_tfrecord(source: ShardSet, indices: np.ndarray, path: Path) -> dict:
    """Google's records of the instances at ``indices``, in that order, to one TFRecord file."""
    with RecordWriter(path) as writer:
        for start in range(0, len(indices), _BATCH):
            features = source.read(indices[start:start + _BATCH]).features()
            features["next_sentence_labels"] = features["next_sentence_labels"][:, None]
            for row in range(len(features["input_ids"])):
                writer.write(encode_example({g: features[name][row] for name, g in _GOOGLE_NAMES.items()}))
    return {"file": path.name, "instances": len(indices), "bytes": path.stat().st_size}


def _write_bertkit(source: ShardSet, indices: np.ndarray, path: Path, ctx: _Context) -> dict:
    c = ctx.config
    with ShardWriter(path, ctx.dtype, c.max_seq_length, c.max_predictions_per_seq, False) as writer:
        for start in range(0, len(indices), _BATCH):
            writer.add(source.read(indices[start:start + _BATCH]))
        return writer.close()


@dataclass(frozen=True)
class _ExportTask:
    index: int
    seed: int
    first: int  # positions [first, end) of the global order
    end: int


def _export_part(ctx: tuple[Path, list[dict], Path, int], task: _ExportTask) -> dict:
    """One TFRecord file: positions [first, end) of the global order order(seed, 0)."""
    shard_dir, entries, out, total = ctx
    source = ShardSet(shard_dir, entries)
    positions = np.arange(task.first, task.end)
    indices = shuffled_order(total, task.seed, 0)(positions)
    return _write_tfrecord(source, indices, out / f"shard-{task.index:05d}.tfrecord")


def _export_tfrecords(shard_dir: Path, entries: list[dict], out: Path, config: CreateConfig, workers: int) -> list[dict]:
    total = sum(e["instances"] for e in entries)
    cuts = np.linspace(0, total, len(entries) + 1).astype(np.int64).tolist()
    tasks = [_ExportTask(i, config.seed, a, b) for i, (a, b) in enumerate(itertools.pairwise(cuts))]
    return list(ordered_map(_export_part, tasks, (shard_dir, entries, out, total), workers))


# ----------------------------------------------------------------------------- the run


def _vocab_file(vocab: str | Path) -> Path:
    path = Path(vocab)
    return path / "vocab.txt" if path.is_dir() else path


def _manifest(config: CreateConfig, tokenizer: BertTokenizer, store: TokenStore, made: list[dict],
              files: list[dict], seconds: float) -> dict:
    """made: the bertkit shards the instances were made in; files: the data files written (the same
    entries for --format bertkit)."""
    c = config
    return {
        "format": c.output_format,
        "format_version": FORMAT_VERSION,
        "created_by": f"bertkit {_version()}",
        "num_instances": sum(e["instances"] for e in made),
        "num_tokens": sum(e["tokens"] for e in made),
        "num_predictions": sum(e["predictions"] for e in made),
        "max_token_id": max(e["max_token_id"] for e in made),
        "parameters": {"max_seq_length": c.max_seq_length, "max_predictions_per_seq": c.max_predictions_per_seq,
                       "masked_lm_prob": c.masked_lm_prob, "dupe_factor": c.dupe_factor,
                       "short_seq_prob": c.short_seq_prob, "whole_word_mask": c.whole_word_mask,
                       "do_lower_case": tokenizer.lower_case, "seed": c.seed, "dynamic_masking": c.dynamic_masking,
                       "google_rng": c.google_rng, "format": c.output_format},
        "vocab": {"file": "vocab.txt", "size": len(tokenizer), "sha256": vocab_checksum(tokenizer.vocab),
                  "pad_id": tokenizer.pad_id, "cls_id": tokenizer.cls_id, "sep_id": tokenizer.sep_id,
                  "mask_id": tokenizer.mask_id},
        "token_dtype": store.meta["dtype"],
        "input": store.meta["report"],
        "order": "Google's record order" if c.google_rng else "creation order (shard, dupe round, document, "
                 "position); read through PretrainingDataset.order(seed, epoch)" + (
                     ", the records written in order(seed, 0)" if c.output_format == "tfrecord" else ""),
        "seconds": round(seconds, 3),
        "shards": files,
    }


def create_pretraining_data(inputs: str | Sequence[str | Path], vocab: str | Path, output: str | Path,
                            config: CreateConfig = CreateConfig(), lower_case: bool | None = None,
                            workers: int = 1, overwrite: bool = False, progress: bool = False) -> dict:
    """Make pretraining data from text files; returns the manifest (also written to output/manifest.json).

    inputs: comma-separated globs or a list of paths (one sentence per line, a blank line between
    documents); vocab: a vocab.txt or a model directory holding one; lower_case: None reads it from
    the model directory or guesses it from the vocabulary; workers: processes for both passes (the
    output does not depend on it); overwrite: replace finished data in ``output``.
    """
    started = time.perf_counter()
    if not isinstance(workers, int) or workers < 1:
        raise BertkitError(f"workers must be an integer >= 1, not {workers!r}")
    tokenizer = load_tokenizer(vocab, lower_case)
    tables = VocabTables.from_vocab(tokenizer.vocab, str(vocab))
    files, out = expand_inputs(inputs), Path(output)
    resume = _prepare_output(out, _fingerprint(config, files, vocab_checksum(tokenizer.vocab), tokenizer.lower_case),
                             overwrite)
    work = out / _WORK
    store_dir = work / "store"
    store = TokenStore(store_dir) if resume and (store_dir / "store.json").is_file() else \
        build_token_store(files, tokenizer, store_dir, workers, progress)
    made, written = _make_instances(tokenizer, tables, store_dir, store, out, config, workers, progress)
    atomic_write_bytes(out / "vocab.txt", _vocab_file(vocab).read_bytes())
    manifest = _manifest(config, tokenizer, store, made, written, time.perf_counter() - started)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _make_instances(tokenizer: BertTokenizer, tables: VocabTables, store_dir: Path, store: TokenStore, out: Path,
                    config: CreateConfig, workers: int, progress: bool) -> tuple[list[dict], list[dict]]:
    """Pass 2 (and the TFRecord export): the shards the instances were made in, and the files written."""
    to_tfrecord = config.output_format == "tfrecord"
    shard_dir = out / _WORK / "shards" if to_tfrecord or config.google_rng else out
    shard_dir.mkdir(exist_ok=True)
    ctx = _Context(config, tables, store_dir, shard_dir, token_dtype(len(tokenizer)))
    if config.google_rng:
        return _google_output(ctx, store, out)
    made = _make_shards(ctx, store, workers, progress)
    return made, _export_tfrecords(shard_dir, made, out, config, workers) if to_tfrecord else made


def _google_output(ctx: _Context, store: TokenStore, out: Path) -> tuple[list[dict], list[dict]]:
    """--google-rng: the instances made in Google's order, then written in its final order to one file."""
    entry, final = _google_shard(ctx, store, ctx.shard_dir / "creation.bin")
    source, order = ShardSet(ctx.shard_dir, [entry]), np.array(final, dtype=np.int64)
    if ctx.config.output_format == "tfrecord":
        return [entry], [_write_tfrecord(source, order, out / "shard-00000.tfrecord")]
    written = _write_bertkit(source, order, out / shard_name(0), ctx)
    return [written], [written]


def _version() -> str:
    from bertkit import __version__

    return __version__
