"""Pass 1 of ``bertkit data create``: input text files to an on-disk token store.

Input format (Google's): one sentence (segment) per line, a blank line between documents. As in
Google's reader, a line is stripped (Python's ``str.strip``) and a blank one ends the document; a
line that tokenizes to nothing is dropped, and a document left with no lines disappears. Unlike
Google's reader, the end of a file also ends a document (Google lets the last document of a file
run on into the next file). Bytes that are not UTF-8 are replaced (U+FFFD) and counted; empty files
and binary files (a NUL byte in the first 64 KiB) are skipped and counted.

The store is a directory of flat arrays, read by memory-mapping:

    tokens.bin     all token ids, back to back: uint16 if the vocabulary has at most 65,536 ids, else int32
    segments.bin   int64 (S+1,): segment s is tokens[segments[s]:segments[s+1]]
    documents.bin  int64 (D+1,): document d is segments documents[d] .. documents[d+1]-1
    store.json     the counts, the token dtype and what was skipped

Files are cut into chunks of about 1 MiB at line ends, the chunks tokenized in parallel and their
tokens appended in chunk order, so the store is the same for any number of workers. The store is
built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bertkit.data.workers import ordered_map
from bertkit.errors import BertkitError, file_error
from bertkit.tokenizer import BertTokenizer

__all__ = ["InputReport", "TokenStore", "build_token_store", "expand_inputs", "token_dtype"]

CHUNK_BYTES = 1 << 20  # input bytes per tokenization task
_BINARY_PROBE = 64 << 10  # a NUL byte in this many first bytes marks a binary file
_ENCODE_LINES = 4096  # lines per encode_batch call


@dataclass
class InputReport:
    """What pass 1 read, kept and skipped."""

    files: list[str] = field(default_factory=list)  # text files read, in order
    bytes: int = 0  # their size
    lines: int = 0  # lines read
    empty_files: list[str] = field(default_factory=list)  # skipped: no bytes
    binary_files: list[str] = field(default_factory=list)  # skipped: a NUL byte near the start
    replaced_characters: int = 0  # U+FFFD put in for bytes that are not UTF-8
    dropped_lines: int = 0  # non-blank lines with no tokens (e.g. only control characters)
    documents: int = 0  # documents with at least one segment
    one_segment_documents: int = 0  # of those, documents of one segment (B is then always random)
    segments: int = 0
    tokens: int = 0


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else int32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def expand_inputs(inputs: str | Sequence[str | Path]) -> list[Path]:
    """Input files from comma-separated globs (or a list of them); a directory stands for its files.

    Each pattern's matches are sorted; a pattern that matches nothing raises BertkitError.
    """
    patterns = inputs.split(",") if isinstance(inputs, str) else [str(p) for p in inputs]
    files: list[Path] = []
    for pattern in (p.strip() for p in patterns if p.strip()):
        matches = sorted(glob.glob(pattern, recursive=True)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise BertkitError(f"--input: nothing matches {pattern!r}")
        for match in map(Path, matches):
            files += _files_under(match) if match.is_dir() else [match]
    if not files:
        raise BertkitError("--input: no input files")
    return files


def _files_under(directory: Path) -> list[Path]:
    """The files under a directory, sorted, hidden files and directories left out."""
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Chunk:
    """Bytes [start, end) of a file, cut at line ends; ``opens_file``: the file's first chunk."""

    path: str
    start: int
    end: int
    opens_file: bool


def _is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(_BINARY_PROBE)


def _cut_points(f: BinaryIO, size: int) -> list[int]:
    """Chunk ends: the first line end after each CHUNK_BYTES, then the end of the file."""
    cuts, pos = [], 0
    while pos < size:
        pos = min(pos + CHUNK_BYTES, size)
        f.seek(pos)
        while pos < size:
            block = f.read(1 << 16)
            newline = block.find(b"\n")
            if newline >= 0:
                pos += newline + 1
                break
            pos += len(block)
        cuts.append(pos)
    return cuts


def _plan(files: list[Path], report: InputReport) -> list[_Chunk]:
    chunks = []
    for path in files:
        try:
            size = path.stat().st_size
            if size == 0:
                report.empty_files.append(str(path))
                continue
            if _is_binary(path):
                report.binary_files.append(str(path))
                continue
            with open(path, "rb") as f:
                cuts = _cut_points(f, size)
        except OSError as e:
            raise file_error(path, f"cannot read: {e.strerror or e}") from None
        report.files.append(str(path))
        report.bytes += size
        chunks += [_Chunk(str(path), a, b, a == 0) for a, b in zip([0] + cuts[:-1], cuts)]
    return chunks


# ----------------------------------------------------------------------------- tokenizing a chunk


@dataclass
class _ChunkTokens:
    ids: np.ndarray  # token ids of the kept segments, back to back
    lengths: np.ndarray  # int64: tokens per kept segment
    opens_document: np.ndarray  # bool per kept segment: a document starts with it
    ends_document: bool  # a document break after the last kept segment (blank lines at the end)
    lines: int
    replaced: int
    dropped: int


def _read_lines(chunk: _Chunk) -> tuple[list[str], int]:
    """The chunk's lines (split on "\\n" only, as Google's readline) and the count of replaced characters."""
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    text = data.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd") - data.count("\ufffd".encode())
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines, replaced


def _encode(tokenizer: BertTokenizer, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of each line, back to back, and tokens per line (Rust batch encoding)."""
    encodings = tokenizer.encode_batch(lines, max_length=sys.maxsize)
    full = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int64, int(full.sum()))
    keep = np.ones(len(flat), dtype=bool)
    starts = np.cumsum(full) - full
    keep[starts] = False  # [CLS]
    keep[starts + full - 1] = False  # [SEP]
    return flat[keep], full - 2


def _segments(lines: list[str], opens_file: bool) -> tuple[list[str], list[bool], bool]:
    """The non-blank lines stripped, whether a document break comes before each, and after the last."""
    texts, breaks, pending = [], [], opens_file
    for line in lines:
        stripped = line.strip()
        if stripped:
            texts.append(stripped)
            breaks.append(pending)
            pending = False
        else:
            pending = True
    return texts, breaks, pending


def _tokenize_chunk(tokenizer: BertTokenizer, chunk: _Chunk) -> _ChunkTokens:
    """Tokenize one chunk: its kept segments, and where documents start."""
    lines, replaced = _read_lines(chunk)
    texts, breaks, trailing = _segments(lines, chunk.opens_file)
    ids, lengths = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for at in range(0, len(texts), _ENCODE_LINES):
        part_ids, part_lengths = _encode(tokenizer, texts[at:at + _ENCODE_LINES])
        ids.append(part_ids)
        lengths.append(part_lengths)
    all_lengths = np.concatenate(lengths)
    kept = all_lengths > 0
    opens, carry = _carry_breaks(np.array(breaks, dtype=bool), kept)
    return _ChunkTokens(np.concatenate(ids).astype(token_dtype(len(tokenizer))), all_lengths[kept], opens[kept],
                        trailing or carry, len(lines), replaced, int((~kept).sum()))


def _carry_breaks(breaks: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, bool]:
    """A dropped segment's document break passes to the next kept one; also the break left over at the end."""
    out, carry = breaks.copy(), False
    for i in np.flatnonzero(~kept | breaks).tolist():  # few: document starts and dropped lines
        if not kept[i]:
            carry = carry or bool(breaks[i])
        elif carry:
            out[i], carry = True, False
    return out, carry


# ----------------------------------------------------------------------------- the store


class TokenStore:
    """A token store opened read-only: memory-mapped ``tokens``, ``segments``, ``documents``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        try:
            self.meta = json.loads((self.directory / "store.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise file_error(self.directory, f"not a complete token store ({e})") from None
        self.tokens = _map(self.directory / "tokens.bin", np.dtype(self.meta["dtype"]))
        self.segments = _map(self.directory / "segments.bin", np.dtype(np.int64))
        self.documents = _map(self.directory / "documents.bin", np.dtype(np.int64))

    @property
    def num_documents(self) -> int:
        return len(self.documents) - 1

    def document_tokens(self) -> np.ndarray:
        """int64 (D,): tokens in each document."""
        return np.diff(self.segments[self.documents])


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    """A file as a read-only array (a plain ndarray view of a memory map; empty file: empty array)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r").view(np.ndarray)


class _StoreWriter:
    """Appends chunk results to the three store files, in chunk order."""

    def __init__(self, directory: Path, report: InputReport):
        self.directory, self.report = directory, report
        self._stack = contextlib.ExitStack()  # closed by close() or abort()
        self.files = {name: self._stack.enter_context(open(directory / f"{name}.bin", "wb"))
                      for name in ("tokens", "segments", "documents")}
        self.num_tokens = self.num_segments = 0
        self.pending_break = True
        np.zeros(1, np.int64).tofile(self.files["segments"])

    def add(self, part: _ChunkTokens) -> None:
        opens = part.opens_document.copy()
        if len(opens):
            opens[0] |= self.pending_break
            self.pending_break = part.ends_document
        else:
            self.pending_break |= part.ends_document
        part.ids.tofile(self.files["tokens"])
        (self.num_tokens + np.cumsum(part.lengths)).tofile(self.files["segments"])
        (self.num_segments + np.flatnonzero(opens)).astype(np.int64).tofile(self.files["documents"])
        self.num_tokens += len(part.ids)
        self.num_segments += len(part.lengths)
        self.report.lines += part.lines
        self.report.replaced_characters += part.replaced
        self.report.dropped_lines += part.dropped

    def abort(self) -> None:
        self._stack.close()

    def close(self, dtype: np.dtype) -> None:
        np.array([self.num_segments], np.int64).tofile(self.files["documents"])
        self._stack.close()
        documents = _map(self.directory / "documents.bin", np.dtype(np.int64))
        self.report.documents = len(documents) - 1
        self.report.one_segment_documents = int((np.diff(documents) == 1).sum())
        self.report.segments, self.report.tokens = self.num_segments, self.num_tokens
        meta = {"dtype": dtype.name, "report": asdict(self.report)}
        (self.directory / "store.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def build_token_store(files: list[Path], tokenizer: BertTokenizer, directory: str | Path, workers: int = 1,
                      progress: bool = False) -> TokenStore:
    """Tokenize ``files`` into a token store at ``directory`` (replaced if there); see the module docstring."""
    from tqdm import tqdm

    directory, report = Path(directory), InputReport()
    chunks = _plan(files, report)
    if not chunks:
        raise BertkitError(f"--input: no text in {len(files)} file(s) (empty or binary: {_skipped(report)})")
    directory.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    writer = _StoreWriter(building, report)
    try:
        bar = tqdm(total=report.bytes, unit="B", unit_scale=True, desc="tokenize", disable=not progress or None,
                   file=sys.stderr)
        with bar:
            for chunk, part in zip(chunks, ordered_map(_tokenize_chunk, chunks, tokenizer, workers)):
                writer.add(part)
                bar.update(chunk.end - chunk.start)
        writer.close(token_dtype(len(tokenizer)))
        if report.tokens == 0:
            raise BertkitError(f"--input: no tokens in {len(report.files)} file(s)")
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(building, directory)
    except BaseException:
        writer.abort()
        shutil.rmtree(building, ignore_errors=True)
        raise
    return TokenStore(directory)


def _skipped(report: InputReport) -> str:
    names = report.empty_files + report.binary_files
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
