"""Documents to Google's pretraining text: one sentence per line, a blank line after each document.

Inputs, told apart by their content, file by file:

* Article files (``bertkit.data.wiki``): the first non-blank line is ``<doc ...>``. Each
  ``<doc>`` ... ``</doc>`` is one document, and each line inside it one paragraph.
* Anything else is plain text: the whole file is ONE document. How its lines make paragraphs is
  ``paragraphs``: "lines" (each non-blank line is a paragraph, as in ../shared/corpus), "blocks"
  (lines are hard-wrapped: the lines between blank lines are joined into one paragraph, as in a
  Project Gutenberg text), or "auto" (the default): "blocks" when the file has a blank line and a
  run of several lines between blank lines, and nearly all its lines are short (at most 100
  characters, as wrapped text is); otherwise "lines". Blank lines are never document breaks here.

A directory given as an input stands for the ``*.txt`` files under it, in sorted order. Bytes that
are not UTF-8 are replaced (U+FFFD) and counted; empty files and binary files (a NUL byte in the
first 64 KiB) are skipped and counted.

Sentence splitting uses syntok (MIT, pure Python, rules only: nothing to download), with two
mends for the places where it cuts too early: after a title glued to a dash ("--Mrs. Weston") and
at a semicolon ("said James; "you were ..."", "her pride; Betsey her darling"). Compared on
Austen's six novels (4.0 MB, one paragraph per line), counting sentences that end in a title
(Mr./Mrs./Dr./...: a false cut), that hold ". X" after a 3+ letter word (a missed cut, roughly),
that start in lower case (mostly false cuts), and that end in ";":

    splitter           MB/s   sentences  end in title  missed  lower start  end in ";"
    syntok + mends      1.0      31,714             0       3           19           0
    syntok alone        0.9      32,532            41       2          303         772
    sentence-splitter   1.1      31,763            62       1            7           0   (Moses rules, LGPL, 2019)
    blingfire          13-26     32,467           362     145          497           0
    sentencex          100       20,995            34   3,179           90           0   (keeps quotes whole)
    pysbd               0.2   (on 0.5 MB: 561 missed; 0.03 MB/s on the 217 KB speech lines)

blingfire is fast but misses cuts after short sentences and titles ("He is a sensible man.
Dr. Perry called." stays one) and splits quoted speech ('"Is it you?" / she asked.'). syntok is
right on "Mr.", "U.S.", "D.C.", "p.m.", decimals and quotes; it is the slow part of this module, so
``workers`` splits files in parallel.

Output: ``out/sentences-00000-of-0000N.txt``, N = ``shards``. Each document goes whole to one shard;
documents are assigned largest first to the shard with the fewest bytes so far (NVIDIA's
TextSharding also places whole articles largest first, counting sentences rather than bytes), and
keep their input order within a shard, so the output is deterministic and the same for any number
of workers. A shard's size is within one document of every other's. Every file is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import array
import functools
import heapq
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from syntok import segmenter
from syntok.tokenizer import Tokenizer

from bertkit.data.workers import ordered_map
from bertkit.errors import BertkitError, file_error
from bertkit.io import atomic_open, temp_path_beside

__all__ = ["PARAGRAPH_MODES", "SentenceStats", "shard_name", "split_documents", "split_sentences"]

PARAGRAPH_MODES = ("auto", "lines", "blocks")
_BINARY_PROBE = 64 << 10  # a NUL byte in this many first bytes marks a binary file
_WRAPPED_WIDTH = 100  # hard-wrapped lines are at most this long ...
_WRAPPED_SHARE = 0.95  # ... nearly all of them
_DOC_START = re.compile(r"^<doc\b[^>]*>$")
_DOC_END = "</doc>"
_SPACES = re.compile(r"\s+")
# Where syntok cuts too early: after a title glued to a dash ("--Mrs."), and at a semicolon
# followed by a capital or a quote ("said James; "you were ...", "pride; Betsey her darling").
_TITLE_END = re.compile(
    r"(?:^|[\s\-–—\"'“‘(])(?:Mr|Mrs|Ms|Messrs|Mme|Mlle|Dr|Prof|Rev|Hon|Capt|Col|Gen|Lieut|Lt|Sgt"
    r"|Gov|Sen|Adm|Maj|Brig|Cmdr|pp|cf|viz|vs)\.$"
)
_CLAUSE_END = (";", ",", ":")


@dataclass
class SentenceStats:
    """Counts from one ``split_documents`` run."""

    files: int = 0  # input files read
    documents: int = 0  # documents written (each with at least one sentence)
    sentences: int = 0  # sentences written
    empty_files: int = 0  # skipped: no text at all
    binary_files: int = 0  # skipped: NUL bytes
    invalid_utf8_files: int = 0  # files with bytes that are not UTF-8 ...
    replaced: int = 0  # ... and how many bad sequences were replaced by U+FFFD
    empty_documents: int = 0  # documents with no sentence (e.g. an empty <doc>), not written
    bytes_in: int = 0  # bytes read
    bytes_out: int = 0  # bytes written, all shards
    shard_bytes: list[int] = field(default_factory=list)  # bytes written to each shard
    outputs: list[Path] = field(default_factory=list)  # the shard files


# ----------------------------------------------------------------------------------------------
# Sentences.


@functools.cache
def _tokenizer() -> Tokenizer:
    return Tokenizer(replace_not_contraction=False)  # keeps the text exactly as given


def _cut_too_early(sentence: str) -> bool:
    return sentence.endswith(_CLAUSE_END) or bool(_TITLE_END.search(sentence))


def _mend(sentences: list[str]) -> list[str]:
    """Join each "sentence" that syntok cut too early (see _TITLE_END) to the one after it."""
    mended: list[str] = []
    for sentence in sentences:
        if mended and _cut_too_early(mended[-1]):
            mended[-1] = f"{mended[-1]} {sentence}"
        else:
            mended.append(sentence)
    return mended


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences, each with its whitespace collapsed; line breaks are spaces."""
    text = _SPACES.sub(" ", text).strip()
    if not text:
        return []
    sentences = []
    for tokens in segmenter.segment(_tokenizer().tokenize(text)):
        start, end = tokens[0].offset, tokens[-1].offset + len(tokens[-1].value)
        sentence = text[start:end].strip()
        if sentence:
            sentences.append(sentence)
    return _mend(sentences)


# ----------------------------------------------------------------------------------------------
# One input file to documents.


@dataclass
class _FileResult:
    """What one input file gave: its documents, each as "sentence\\n" lines, and its counts."""

    documents: list[str] = field(default_factory=list)
    sentences: int = 0
    empty_documents: int = 0
    bytes_in: int = 0
    empty: bool = False
    binary: bool = False
    replaced: int = 0


def _decode(data: bytes) -> tuple[str, int]:
    """The text of ``data`` and how many bad UTF-8 sequences were replaced."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        return text, text.count("\ufffd") - data.count("\ufffd".encode("utf-8"))


def _looks_wrapped(lines: list[str]) -> bool:
    """Hard-wrapped text: blank lines between blocks of several short lines."""
    blank = multi = False
    for previous, line in zip(lines, lines[1:]):
        blank |= bool(previous.strip()) and not line.strip()
        multi |= bool(previous.strip()) and bool(line.strip())
    filled = [line for line in lines if line.strip()]
    short = sum(len(line) <= _WRAPPED_WIDTH for line in filled)
    return blank and multi and short >= _WRAPPED_SHARE * len(filled)


def _plain_paragraphs(lines: list[str], mode: str) -> list[str]:
    if mode == "lines" or (mode == "auto" and not _looks_wrapped(lines)):
        return [line for line in lines if line.strip()]
    paragraphs, block = [], []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line.strip())
        elif block:
            paragraphs.append(" ".join(block))
            block = []
    return paragraphs


def _article_documents(lines: list[str]) -> Iterator[list[str]]:
    """The paragraphs of each <doc> of an article file."""
    current: list[str] | None = None
    for line in lines:
        if _DOC_START.match(line):
            current = []
        elif line == _DOC_END and current is not None:
            yield current
            current = None
        elif current is not None and line.strip():
            current.append(line)
    if current is not None:  # a last <doc> with no </doc>: keep what is there
        yield current


def _documents_of(text: str, mode: str) -> Iterator[list[str]]:
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if _DOC_START.match(first):
        yield from _article_documents(lines)
    else:
        yield _plain_paragraphs(lines, mode)


def _split_file(path: Path, mode: str) -> _FileResult:
    """Read one input file and split it; runs in a worker process when there are several."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise file_error(path, f"cannot read: {error.strerror or error}") from None
    result = _FileResult(bytes_in=len(data))
    if b"\0" in data[:_BINARY_PROBE]:
        result.binary = True
        return result
    text, result.replaced = _decode(data)
    result.empty = not text.strip()
    if result.empty:
        return result
    for paragraphs in _documents_of(text, mode):
        sentences = [s for paragraph in paragraphs for s in split_sentences(paragraph.replace("\0", " "))]
        if not sentences:
            result.empty_documents += 1
            continue
        result.sentences += len(sentences)
        result.documents.append("".join(f"{sentence}\n" for sentence in sentences))
    return result


# ----------------------------------------------------------------------------------------------
# Many files to shards.


def _expand(inputs: Sequence[str | Path]) -> list[Path]:
    """Input paths, a directory standing for the *.txt files under it (sorted)."""
    files = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise file_error(path, "directory has no .txt files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise file_error(path, "no such file")
    if not files:
        raise BertkitError("no input files given")
    return files


def _split_task(mode: str, path: Path) -> _FileResult:
    return _split_file(path, mode)


def _count(stats: SentenceStats, result: _FileResult) -> None:
    stats.files += 1
    stats.bytes_in += result.bytes_in
    stats.binary_files += result.binary
    stats.empty_files += result.empty
    stats.invalid_utf8_files += result.replaced > 0
    stats.replaced += result.replaced
    stats.empty_documents += result.empty_documents
    stats.documents += len(result.documents)
    stats.sentences += result.sentences


def _spool(files: list[Path], mode: str, workers: int, stats: SentenceStats, spool: Path) -> array.array:
    """Write every document, each followed by a blank line, to ``spool``; returns their byte sizes."""
    sizes = array.array("q")
    with open(spool, "wb") as handle:
        for result in ordered_map(_split_task, files, mode, workers):
            _count(stats, result)
            for document in result.documents:
                data = f"{document}\n".encode("utf-8")
                handle.write(data)
                sizes.append(len(data))
        handle.flush()
        os.fsync(handle.fileno())
    return sizes


def _assign(sizes: array.array, shards: int) -> list[list[int]]:
    """Documents to shards, largest first to the lightest shard; input order within a shard."""
    loads = [(0, shard) for shard in range(shards)]
    members: list[list[int]] = [[] for _ in range(shards)]
    for doc in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, shard = heapq.heappop(loads)
        members[shard].append(doc)
        heapq.heappush(loads, (load + sizes[doc], shard))
    return [sorted(docs) for docs in members]


def _write_shards(spool: Path, sizes: array.array, outputs: list[Path]) -> list[int]:
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    written = []
    with open(spool, "rb") as source:
        for output, docs in zip(outputs, _assign(sizes, len(outputs))):
            with atomic_open(output, "wb") as handle:
                for doc in docs:
                    source.seek(offsets[doc])
                    handle.write(source.read(sizes[doc]))
            written.append(sum(sizes[doc] for doc in docs))
    return written


def shard_name(index: int, shards: int) -> str:
    """The file name of shard ``index`` of ``shards``: ``sentences-00000-of-00004.txt``."""
    return f"sentences-{index:05d}-of-{shards:05d}.txt"


def _remove_stale(out: Path, keep: list[Path]) -> None:
    """Delete shard files of an earlier run with another shard count."""
    for path in out.glob("sentences-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].txt"):
        if path not in keep:
            path.unlink()


def split_documents(
    inputs: Sequence[str | Path],
    out: str | Path,
    shards: int = 1,
    paragraphs: str = "auto",
    workers: int = 1,
) -> SentenceStats:
    """Split documents into sentences, written as Google's pretraining text to ``out/`` in shards.

    ``inputs``: article files, plain text files, or directories of ``*.txt`` files (see the module
    docstring for the formats and ``paragraphs``). ``workers`` > 1 reads and splits files in that
    many processes; the output does not depend on it. Returns the counts.
    """
    if shards < 1:
        raise BertkitError(f"shards must be at least 1, not {shards}")
    if paragraphs not in PARAGRAPH_MODES:
        raise BertkitError(f"paragraphs must be one of {', '.join(PARAGRAPH_MODES)}, not {paragraphs!r}")
    files, out, stats = _expand(inputs), Path(out), SentenceStats()
    if out.exists() and not out.is_dir():
        raise file_error(out, "exists and is not a directory (the output is a directory of shards)")
    outputs = [out / shard_name(index, shards) for index in range(shards)]
    spool = temp_path_beside(out / "sentences.spool")
    try:
        sizes = _spool(files, paragraphs, workers, stats, spool)
        if shards == 1:
            os.replace(spool, outputs[0])
            stats.shard_bytes = [sum(sizes)]
        else:
            stats.shard_bytes = _write_shards(spool, sizes, outputs)
    finally:
        spool.unlink(missing_ok=True)
    _remove_stale(out, outputs)
    stats.outputs, stats.bytes_out = outputs, sum(stats.shard_bytes)
    return stats
