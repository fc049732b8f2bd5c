"""Google BERT's FullTokenizer (BasicTokenizer + WordPiece), exactly, on the Rust `tokenizers` library.

Google's semantics (google-research/bert tokenization.py), in order:
  1. clean: delete U+0000, U+FFFD and every Cc/Cf character but \t \n \r; \t \n \r and Zs become spaces;
  2. put spaces around every CJK ideograph (Google's block ranges below);
  3. split on whitespace as Python's str.split() does (so U+2028/U+2029 split too);
  4. uncased only, per word: Python str.lower() (final sigma included), NFD, drop Mn characters;
  5. split off punctuation: every Unicode P* character and every non-alphanumeric printable ASCII one;
  6. WordPiece: greedy longest-match-first with "##" continuations; a word longer than 200 characters,
     or one the vocabulary cannot cover, becomes a single [UNK].

Fast and exact: the character classes of steps 1, 4 and 5 come from Python's `unicodedata` (the tables
Google's code uses) and go to the Rust library as regex `Replace`/`Split` steps, so they never depend on
the library's older tables. Lower-casing and NFD are the library's; a text where they can disagree with
Python (final sigma, code points this Python does not know, any character a start-up check finds
handled differently) goes through `_reference_words`, a plain-Python transcription of the steps above.
Pure-ASCII text takes a shorter Rust pipeline. Every path gives character offsets into the original
text, and the tests check every path against Google's golden output.
"""

from __future__ import annotations

import functools
import gc
import itertools
import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

from bertkit.errors import BertkitError, file_error
from bertkit.io import atomic_write_text

MAX_INPUT_CHARS_PER_WORD = 200  # Google's WordpieceTokenizer limit (HF's default is 100)
REQUIRED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")  # [MASK] is optional: only masked-LM needs it
# Google's _is_chinese_char ranges (HF's copy has 0x2B920 for 0x2B820, missing 256 Extension E ideographs).
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
ASCII_PUNCT = ((33, 47), (58, 64), (91, 96), (123, 126))  # Google: all non-alphanumeric printable ASCII

TextInput = str | Sequence[str]  # a text, or (is_split_into_words) a list of words
_Pieces = tuple[list[int], list[tuple[int, int]], list[int | None]]  # ids, offsets, word ids; no specials


@dataclass
class Encoding:
    """One encoded example: [CLS] A [SEP] (B [SEP]).

    offsets are character spans in the original text of each token's own sequence ((0, 0) for
    [CLS]/[SEP]); with is_split_into_words they are spans inside the word named by word_ids. The
    span is where the piece came from: Google's normalization of text[start:end] gives the piece
    (without "##"), or contains it when several pieces come from one character (Hangul syllable);
    an [UNK] spans its whole word.
    An Encoding made by the Rust path reads its fields other than ids on first access; it compares,
    copies and pickles like any other.
    """

    ids: list[int]
    type_ids: list[int]  # 0 for [CLS], A and the first [SEP]; 1 for B and the last [SEP]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int | None]  # 0 for A tokens, 1 for B tokens, None for specials
    word_ids: list[int | None]  # index of the basic-tokenizer word (or of the given word) in its sequence
    num_truncated: int = 0  # tokens dropped by truncation

    @classmethod
    def _from_rust(cls, raw: tokenizers.Encoding, vocab_list: list[str]) -> Encoding:
        """Wrap a Rust encoding: ids are read now, the other fields on first access (see __getattr__),
        which keeps the serial Python part of a batch small."""
        enc = cls.__new__(cls)
        enc.__dict__.update(ids=raw.ids, num_truncated=0, _raw=raw, _vocab_list=vocab_list)
        return enc

    def __getattr__(self, name: str) -> Any:
        """Called only for a field not read yet from the Rust encoding: read it and keep it."""
        raw = self.__dict__.get("_raw")
        if raw is None or name not in _LAZY_FIELDS:
            raise AttributeError(name)
        value = [self._vocab_list[i] for i in raw.ids] if name == "tokens" else getattr(raw, name)
        setattr(self, name, value)
        return value

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and copy the fields only (all of them read)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_LAZY_FIELDS = ("type_ids", "tokens", "offsets", "sequence_ids", "word_ids")


# ----------------------------------------------------------------------------- Unicode tables

Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class _CharTest:
    """Does a text contain a code point from a set? `quick` decides BMP characters from a bitmap
    and flags every astral one; `precise` (a long range list: slow) confirms only what `quick` flags."""

    quick: re.Pattern[str]
    precise: re.Pattern[str]

    @classmethod
    def of(cls, ranges: Ranges) -> _CharTest:
        quick = _merge(ranges + [(0x10000, 0x10FFFF)])
        return cls(re.compile(_class(quick, "py")), re.compile(_class(ranges, "py")))

    def found_in(self, text: str) -> bool:
        hit = self.quick.search(text)
        return bool(hit and self.precise.search(text, hit.start()))


@dataclass(frozen=True)
class _Tables:
    """Google's character classes as code-point ranges, from this Python's unicodedata."""

    delete: Ranges  # removed by _clean_text
    strip: Ranges  # Mn: removed after NFD in uncased mode
    split: Ranges  # punctuation and CJK ideographs: each one its own word
    # Texts with one of these take the Python path: lone surrogates (the library cannot take them);
    # uncased also Σ (final sigma), code points this Python does not know (the library's tables may
    # be newer) and code points the library lower-cases or decomposes differently from Python.
    needs_reference_cased: _CharTest
    needs_reference_uncased: _CharTest


@functools.cache
def _tables() -> _Tables:
    """Build the classes once per process (about 0.2 s: one pass over all code points)."""
    runs: dict[str, Ranges] = {}
    cats = (unicodedata.category(chr(cp)) for cp in range(0x110000))
    cp = 0
    for cat, group in itertools.groupby(cats):
        n = sum(1 for _ in group)
        runs.setdefault(cat, []).append((cp, cp + n - 1))
        cp += n

    def pick(*names: str) -> Ranges:
        return sorted(r for name in names for r in runs.get(name, []))

    control = [(c, c) for a, b in pick("Cc", "Cf") for c in range(a, b + 1) if chr(c) not in "\t\n\r"]
    punct = pick("Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps") + list(ASCII_PUNCT)
    unknown = pick("Cn", "Cs") + [(0x03A3, 0x03A3)] + [(c, c) for c in _library_disagreements(runs)]
    return _Tables(_merge(control + [(0xFFFD, 0xFFFD)]), pick("Mn"), _merge(punct + list(CJK_RANGES)),
                   _CharTest.of(pick("Cs")), _CharTest.of(_merge(unknown)))


def _library_disagreements(runs: dict[str, Ranges]) -> list[int]:
    """Assigned code points whose Lowercase or NFD in the tokenizers library differs from Python's."""
    assigned = (chr(c) for cat, rs in runs.items() if cat not in ("Cn", "Co", "Cs") for a, b in rs
                for c in range(a, b + 1))
    cased, decomposed = [], []
    for ch in assigned:
        if ch.lower() != ch:
            cased.append(ch)
        if not unicodedata.is_normalized("NFD", ch):
            decomposed.append(ch)
    bad = []
    for chars, lib, ours in ((cased, normalizers.Lowercase(), str.lower),
                             (decomposed, normalizers.NFD(), functools.partial(unicodedata.normalize, "NFD"))):
        theirs = lib.normalize_str("\n".join(chars)).split("\n")
        bad += [ord(ch) for ch, got in zip(chars, theirs, strict=True) if got != ours(ch)]
    return bad


def _merge(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def _class(ranges: Ranges, flavour: str, limit: int = 0x10FFFF) -> str:
    """A regex character class for Oniguruma ("onig", used by tokenizers) or Python's re ("py")."""
    esc = (lambda c: f"\\x{{{c:X}}}") if flavour == "onig" else (lambda c: f"\\U{c:08X}")
    clipped = [(a, min(b, limit)) for a, b in ranges if a <= limit]
    return "[" + "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in clipped) + "]"


# ----------------------------------------------------------------------------- Rust pipelines


def _rust_tokenizer(vocab: dict[str, int], lower_case: bool, ascii_only: bool) -> Tokenizer:
    """The fast pipeline; `ascii_only` leaves out NFD and accent stripping, which do nothing on ASCII."""
    t, limit = _tables(), 0x7F if ascii_only else 0x10FFFF
    steps = [normalizers.Replace(Regex(_class(t.delete, "onig", limit)), "")]
    if lower_case:
        steps.append(normalizers.Lowercase())
        if not ascii_only:
            steps += [normalizers.NFD(), normalizers.Replace(Regex(_class(t.strip, "onig")), "")]
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tok.normalizer = normalizers.Sequence(steps)
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),  # after cleaning: space, U+2028, U+2029, as Python's str.split()
        pre_tokenizers.Split(Regex(_class(t.split, "onig", limit)), "isolated"),
    ])
    return tok


# ----------------------------------------------------------------------------- Python reference path


def _is_cjk(cp: int) -> bool:
    return any(a <= cp <= b for a, b in CJK_RANGES)


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    return any(a <= cp <= b for a, b in ASCII_PUNCT) or unicodedata.category(ch).startswith("P")


def _raw_words(text: str) -> Iterator[tuple[str, list[int]]]:
    """Google's _clean_text, CJK spacing and str.split(); yields (word, index in text of each char)."""
    chars: list[str] = []
    pos: list[int] = []
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if ch in "\x00\ufffd" or (cat in ("Cc", "Cf") and ch not in "\t\n\r"):
            continue
        boundary = ch.isspace() or _is_cjk(ord(ch))  # isspace: Zs, \t \n \r, U+2028, U+2029 (rest deleted)
        if boundary and chars:
            yield "".join(chars), pos
            chars, pos = [], []
        if _is_cjk(ord(ch)):
            yield ch, [i]
        elif not boundary:
            chars.append(ch)
            pos.append(i)
    if chars:
        yield "".join(chars), pos


def _lower_and_strip(word: str, pos: list[int]) -> tuple[str, list[int]]:
    """str.lower(), NFD and Mn removal on one word, keeping each output char's source index."""
    lowered = word.lower()  # on the whole word: final sigma depends on context
    pos = [p for ch, p in zip(word, pos) for _ in range(len(ch.lower()))]  # lengths are context-free
    pos = [p for ch, p in zip(lowered, pos) for _ in range(len(unicodedata.normalize("NFD", ch)))]
    decomposed = unicodedata.normalize("NFD", lowered)
    kept = [(c, p) for c, p in zip(decomposed, pos) if unicodedata.category(c) != "Mn"]
    return "".join(c for c, _ in kept), [p for _, p in kept]


def _reference_words(text: str, lower_case: bool) -> list[tuple[str, list[int]]]:
    """Google's BasicTokenizer.tokenize, each word with the index in `text` of each of its chars."""
    words = []
    for word, pos in _raw_words(text):
        if lower_case:
            word, pos = _lower_and_strip(word, pos)
        start = 0
        for i, ch in enumerate(word):
            if _is_punct(ch):
                words += [(word[start:i], pos[start:i]), (ch, pos[i:i + 1])]
                start = i + 1
        words.append((word[start:], pos[start:]))
    return [(w, p) for w, p in words if w]


def _wordpiece(word: str, vocab: dict[str, int]) -> list[tuple[str, int, int]] | None:
    """Greedy longest-match-first pieces of `word` with their [start, end) in it; None for [UNK]."""
    if len(word) > MAX_INPUT_CHARS_PER_WORD:
        return None
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append((piece, start, end))
                start = end
                break
        else:
            return None
    return pieces


# ----------------------------------------------------------------------------- the tokenizer


class BertTokenizer:
    """Google's FullTokenizer with batching, offsets, pairs, Google's truncation and padding."""

    def __init__(self, vocab: dict[str, int] | str | Path, lower_case: bool = True):
        """vocab: a token -> id mapping or a vocab.txt path; lower_case: Google's do_lower_case."""
        source = "<vocab dict>" if isinstance(vocab, dict) else str(vocab)
        self.vocab: dict[str, int] = dict(vocab) if isinstance(vocab, dict) else load_vocab(vocab)
        if not isinstance(lower_case, bool):
            raise BertkitError(f"lower_case must be True or False, not {lower_case!r}")
        self.lower_case = lower_case
        if not all(isinstance(i, int) and i >= 0 for i in self.vocab.values()):
            raise file_error(source, "vocabulary ids must be integers >= 0")
        missing = [t for t in REQUIRED_TOKENS if t not in self.vocab]
        if missing:
            raise file_error(source, f"vocabulary lacks the special token(s) {', '.join(missing)}")
        self._source = source
        self._inv: list[str | None] = [None] * (max(self.vocab.values()) + 1)
        for token, i in self.vocab.items():
            self._inv[i] = token
        self._ascii = _rust_tokenizer(self.vocab, lower_case, ascii_only=True)
        self._full = _rust_tokenizer(self.vocab, lower_case, ascii_only=False)
        tables = _tables()
        self._needs_reference = tables.needs_reference_uncased if lower_case else tables.needs_reference_cased

    @property
    def cls_id(self) -> int:
        return self.vocab["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.vocab["[SEP]"]

    @property
    def pad_id(self) -> int:
        return self.vocab["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self.vocab["[UNK]"]

    @property
    def mask_id(self) -> int:
        """id of [MASK]; BertkitError if the vocabulary has none."""
        if "[MASK]" not in self.vocab:
            raise file_error(self._source, "vocabulary lacks [MASK], which masked-LM needs")
        return self.vocab["[MASK]"]

    def __len__(self) -> int:
        """Vocabulary size: the largest id + 1 (the number of lines of a vocab.txt)."""
        return len(self._inv)

    def basic_tokenize(self, text: str) -> list[str]:
        """Google's BasicTokenizer output for `text` (words before WordPiece)."""
        return [word for word, _ in _reference_words(_check_text(text, False, "text"), self.lower_case)]

    def tokenize(self, text: str) -> list[str]:
        """Google's FullTokenizer.tokenize: the WordPiece tokens of `text`, without [CLS]/[SEP]."""
        return self._encode_full([(_check_text(text, False, "text"), None)], False)[0].tokens[1:-1]

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        """Token strings -> ids; a token not in the vocabulary gives the [UNK] id."""
        unk = self.unk_id
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        """Ids -> token strings; an id the vocabulary does not have raises BertkitError."""
        try:
            out = [self._inv[i] if i >= 0 else None for i in ids]
        except (IndexError, TypeError):
            out = [None]
        if None in out:
            raise BertkitError(f"token ids outside the vocabulary of {len(self)} ids: {list(ids)[:20]}")
        return out  # type: ignore[return-value]

    def encode(self, text_a: TextInput, text_b: TextInput | None = None, max_length: int = 512,
               is_split_into_words: bool = False) -> Encoding:
        """Encode one text or pair as [CLS] A [SEP] (B [SEP]), truncated to max_length as Google does."""
        return self.encode_batch([(text_a, text_b)], max_length, is_split_into_words)[0]

    def encode_batch(self, texts: Sequence[TextInput | tuple[TextInput, TextInput | None]],
                     max_length: int = 512, is_split_into_words: bool = False) -> list[Encoding]:
        """Encode many texts (or (text_a, text_b) tuples) at once; the Rust part runs in parallel.

        Truncation is Google's: a single text keeps its first max_length - 2 tokens; a pair drops the
        last token of the longer side (of B on ties) until it fits in max_length - 3.
        """
        pairs = [_as_pair(item, is_split_into_words, i) for i, item in enumerate(texts)]
        needed = 3 if any(b is not None for _, b in pairs) else 2
        if not isinstance(max_length, int) or max_length < needed:
            raise BertkitError(f"max_length must be an integer >= {needed}, not {max_length!r}")
        with _gc_paused():
            return [_truncate(e, max_length) for e in self._encode_full(pairs, is_split_into_words)]

    def pad(self, encodings: Sequence[Encoding], pad_to: int | None = None,
            return_tensors: str = "pt") -> dict[str, Any]:
        """Stack encodings into input_ids, token_type_ids, attention_mask of shape (B, T), int64.

        T is pad_to, or the longest encoding; return_tensors "pt" gives torch tensors, "np" numpy.
        """
        if return_tensors not in ("pt", "np"):
            raise BertkitError(f"return_tensors must be 'pt' or 'np', not {return_tensors!r}")
        longest = max((len(e.ids) for e in encodings), default=0)
        width = longest if pad_to is None else pad_to
        if width < longest:
            raise BertkitError(f"pad_to={pad_to} is shorter than the longest encoding ({longest} tokens)")
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)  # (B, T)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            types[row, :len(e.ids)] = e.type_ids
            mask[row, :len(e.ids)] = 1
        out = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        if return_tensors == "pt":
            import torch  # here, so that tokenizing alone (data workers) never imports torch

            out = {k: torch.from_numpy(v) for k, v in out.items()}
        return out

    def save_vocabulary(self, directory: str | Path) -> Path:
        """Write <directory>/vocab.txt (one token per line, in id order) atomically; return its path."""
        if None in self._inv:
            raise file_error(self._source, f"ids are not contiguous 0..{len(self) - 1}; cannot write vocab.txt")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "vocab.txt"
        atomic_write_text(path, "".join(f"{token}\n" for token in self._inv))
        return path

    def _route(self, text: TextInput) -> int:
        """0: ASCII Rust pipeline, 1: full Rust pipeline, 2: Python reference path."""
        joined = text if isinstance(text, str) else " ".join(text)
        if joined.isascii():
            return 0
        return 2 if self._needs_reference.found_in(joined) else 1

    def _encode_full(self, pairs: Sequence[tuple[TextInput, TextInput | None]], split: bool,
                     reference: bool = False) -> list[Encoding]:
        """Untruncated encodings, by route; `reference` sends every text down the Python path."""
        routes = [2 if reference else max(self._route(a), 0 if b is None else self._route(b)) for a, b in pairs]
        out: list[Encoding | None] = [None] * len(pairs)
        for route, tok in ((0, self._ascii), (1, self._full)):
            idx = [i for i, r in enumerate(routes) if r == route]
            batch = [pairs[i][0] if pairs[i][1] is None else pairs[i] for i in idx]
            for i, e in zip(idx, tok.encode_batch(batch, is_pretokenized=split) if idx else ()):
                out[i] = Encoding._from_rust(e, self._inv)  # type: ignore[arg-type]
        for i, r in enumerate(routes):
            if r == 2:
                a, b = pairs[i]
                b_pieces = None if b is None else self._reference_pieces(b, split)
                out[i] = self._join(self._reference_pieces(a, split), b_pieces)
        return out  # type: ignore[return-value]

    def _reference_pieces(self, text: TextInput, split: bool) -> _Pieces:
        """The Python path: Google's algorithm step by step, with offsets; no specials."""
        ids, offsets, word_ids = [], [], []
        units = [(i, w) for i, w in enumerate(text)] if split else [(None, text)]
        for given, unit in units:
            for n, (word, pos) in enumerate(_reference_words(unit, self.lower_case)):
                pieces = _wordpiece(word, self.vocab) or [("[UNK]", 0, len(word))]
                ids += [self.vocab[p] for p, _, _ in pieces]
                offsets += [(pos[s], pos[e - 1] + 1) for _, s, e in pieces]
                word_ids += [n if given is None else given] * len(pieces)
        return ids, offsets, word_ids

    def _join(self, a: _Pieces, b: _Pieces | None) -> Encoding:
        """[CLS] a [SEP] (b [SEP]) with type and sequence ids, as the Rust post-processor does it."""
        cls, sep, none = [self.cls_id], [self.sep_id], [None]
        ids, offsets, words = cls + a[0] + sep, [(0, 0)] + a[1] + [(0, 0)], none + a[2] + none
        seqs, types = none + [0] * len(a[0]) + none, [0] * (len(a[0]) + 2)
        if b is not None:
            ids, offsets, words = ids + b[0] + sep, offsets + b[1] + [(0, 0)], words + b[2] + none
            seqs, types = seqs + [1] * len(b[0]) + none, types + [1] * (len(b[0]) + 1)
        return Encoding(ids, types, [self._inv[i] for i in ids], offsets, seqs, words)  # type: ignore[arg-type]


def _truncate(e: Encoding, max_length: int) -> Encoding:
    """Google's truncation of an untruncated encoding ([CLS] A [SEP] or [CLS] A [SEP] B [SEP])."""
    if len(e.ids) <= max_length:  # for a pair: len(A) + len(B) <= max_length - 3, Google's test
        return e
    la = e.sequence_ids.index(None, 1) - 1  # the first [SEP] follows A
    pair = la + 2 < len(e.ids)
    lb = len(e.ids) - la - 3 if pair else None
    ka, kb = _truncated_lengths(la, lb, max_length)
    keep = [*range(ka + 1), la + 1]
    if pair:
        keep += [*range(la + 2, la + 2 + kb), len(e.ids) - 1]
    columns = (e.ids, e.type_ids, e.tokens, e.offsets, e.sequence_ids, e.word_ids)
    return Encoding(*[[c[i] for i in keep] for c in columns], num_truncated=len(e.ids) - len(keep))  # type: ignore


def _truncated_lengths(na: int, nb: int | None, max_length: int) -> tuple[int, int]:
    """Lengths Google keeps: first max_length-2 of a single text; for a pair, the result of popping
    the last token of the longer side (B on ties) while na + nb > max_length - 3 (_truncate_seq_pair)."""
    if nb is None:
        return min(na, max_length - 2), 0
    budget = max_length - 3
    if na + nb <= budget:
        return na, nb
    short = min(na, nb)
    if 2 * short <= budget:  # only the longer side is cut, to what is left
        return (budget - nb, nb) if na > nb else (na, budget - na)
    return budget - budget // 2, budget // 2  # both cut down to equal length; B goes first


def _as_pair(item: Any, split: bool, index: int) -> tuple[TextInput, TextInput | None]:
    """Read one batch item as (text_a, text_b or None), checking the types."""
    is_pair = isinstance(item, tuple) and (not split or (len(item) == 2 and not isinstance(item[0], str)))
    if not is_pair:
        return _check_text(item, split, f"texts[{index}]"), None
    if len(item) != 2:
        raise BertkitError(f"texts[{index}]: a pair must be (text_a, text_b), got {len(item)} items")
    b = None if item[1] is None else _check_text(item[1], split, f"texts[{index}][1]")
    return _check_text(item[0], split, f"texts[{index}][0]"), b


def _check_text(text: Any, split: bool, where: str) -> TextInput:
    if split:
        if isinstance(text, str) or not all(isinstance(w, str) for w in text):
            raise BertkitError(f"{where}: with is_split_into_words, expected a list of str words")
        return list(text)
    if not isinstance(text, str):
        raise BertkitError(f"{where}: expected str, got {type(text).__name__}")
    return text


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small lists (none of them in cycles)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------- vocab files


def load_vocab(path: str | Path) -> dict[str, int]:
    """Google's load_vocab: line i (split on "\\n", stripped) is token i; a repeated token keeps its
    last line. A missing, unreadable, non-UTF-8 or empty file raises BertkitError naming it."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise file_error(path, f"cannot read vocabulary: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise file_error(path, f"vocabulary is not UTF-8 text (byte {e.start})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise file_error(path, "vocabulary file is empty")
    return {line.strip(): i for i, line in enumerate(lines)}


def infer_lower_case(vocab: dict[str, int]) -> bool:
    """Guess do_lower_case: True unless at least 1% of the entries (bracketed specials like [CLS]
    left out) contain an uppercase letter. bert-base-uncased has 2 such entries in 30,522 (ℝ, ##ℝ);
    cased vocabularies have thousands ("The", "##S")."""
    words = [t for t in vocab if not (t.startswith("[") and t.endswith("]"))]
    upper = sum(1 for t in words if any(c.isupper() for c in t))
    return upper < 0.01 * max(len(words), 1)


def load_tokenizer(path_or_vocab: str | Path, lower_case: bool | None = None) -> BertTokenizer:
    """A tokenizer from a vocab file, or from a model directory holding vocab.txt (Google, HF or bertkit).

    lower_case None: "do_lower_case" from tokenizer_config.json (HF) or bertkit.json in that directory
    (for a file: its directory), else infer_lower_case(vocab).
    """
    path = Path(path_or_vocab)
    if path.is_dir():
        vocab_path = path / "vocab.txt"
        if not vocab_path.is_file():
            raise file_error(path, "no vocab.txt in this directory")
    elif path.is_file():
        vocab_path = path
    else:
        raise file_error(path, "no such file or directory")
    if lower_case is None:
        lower_case = _configured_lower_case(vocab_path.parent)
    if lower_case is None:
        lower_case = infer_lower_case(load_vocab(vocab_path))
    return BertTokenizer(vocab_path, lower_case)


def _configured_lower_case(directory: Path) -> bool | None:
    """do_lower_case from tokenizer_config.json or bertkit.json in `directory`, if either sets it."""
    for name in ("tokenizer_config.json", "bertkit.json"):
        path = directory / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise file_error(path, f"cannot read JSON: {e}") from None
        if not isinstance(config, dict) or "do_lower_case" not in config:
            continue
        if not isinstance(config["do_lower_case"], bool):
            raise file_error(path, f"do_lower_case must be true or false, not {config['do_lower_case']!r}")
        return config["do_lower_case"]
    return None
