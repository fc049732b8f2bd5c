"""bertkit.tokenizer: Google's FullTokenizer exactly (golden files), offsets, pairs, truncation, files."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import require_shared

from bertkit.errors import BertkitError
from bertkit.tokenizer import (
    BertTokenizer,
    Encoding,
    _reference_words,
    _truncated_lengths,
    infer_lower_case,
    load_tokenizer,
    load_vocab,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "un", "##aff", "##able", "ab", "a", "##b", "##c", "##bc", "x", "##x", "hello", "world", ",",
         "!", ".", "cafe", "naive", "zero", "##width", "中", "国", "οδος", "ς", "σ", "is", "it", "good", "##s",
         "dog"]


def write_vocab(path: Path, tokens: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


@pytest.fixture
def vocab_file(tmp_path: Path) -> Path:
    return write_vocab(tmp_path / "vocab.txt", SPECIALS + WORDS)


@pytest.fixture
def tok(vocab_file: Path) -> BertTokenizer:
    return BertTokenizer(vocab_file, lower_case=True)


# ----------------------------------------------------------------------------- the golden reference


@pytest.fixture(scope="module")
def golden() -> tuple[Path, list[str], list[dict]]:
    folder = require_shared("golden", "google", "dev")
    with open(folder / "tokenizer" / "lines.txt", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")[:-1]
    with open(folder / "tokenizer" / "tokenizer_golden.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert len(lines) == len(records) == 3000
    return folder / "model" / "vocab.txt", lines, records


def first_mismatch(got: list, want: list, lines: list[str]) -> str:
    bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    if not bad:
        return ""
    return f"{len(bad)} lines differ; first {bad[0]}: {lines[bad[0]]!r}\n{got[bad[0]]}\n{want[bad[0]]}"


@pytest.mark.parametrize("mode", ["uncased", "cased"])
def test_golden_tokens_and_ids_identical(golden, mode: str) -> None:
    vocab, lines, records = golden
    tok = BertTokenizer(vocab, lower_case=mode == "uncased")
    want = [r[mode] for r in records]
    assert not first_mismatch([tok.basic_tokenize(t) for t in lines], [w["basic_tokens"] for w in want], lines)
    assert not first_mismatch([tok.tokenize(t) for t in lines], [w["tokens"] for w in want], lines)
    batch = tok.encode_batch(lines, max_length=10_000)
    assert not first_mismatch([e.ids[1:-1] for e in batch], [w["ids"] for w in want], lines)
    reference = tok._encode_full([(t, None) for t in lines], False, reference=True)
    assert not first_mismatch([e.ids[1:-1] for e in reference], [w["ids"] for w in want], lines)
    # the Python path and the Rust paths agree on everything, offsets and word ids included
    assert not first_mismatch(reference, batch, lines)


def normalized(tok: BertTokenizer, text: str) -> str:
    """What Google's BasicTokenizer makes of a slice, words joined (final sigma folded)."""
    return "".join(tok.basic_tokenize(text)).replace("ς", "σ")


@pytest.mark.parametrize("lower_case", [True, False])
def test_offsets_slice_the_original_text(golden, lower_case: bool) -> None:
    """Invariant: every token's piece (without ##) occurs in the normalized slice text[start:end]; the
    slice is exactly the piece when the piece maps char-for-char (ASCII: after lower() when uncased);
    an [UNK] slice is a whole basic word; spans never go backwards."""
    vocab, lines, _ = golden
    tok = BertTokenizer(vocab, lower_case)
    for text, enc in zip(lines, tok.encode_batch(lines, max_length=10_000)):
        last_start = 0
        for token, (start, end) in zip(enc.tokens[1:-1], enc.offsets[1:-1]):
            piece, surface = token.removeprefix("##"), text[start:end]
            assert start >= last_start and end > start, (text, token)
            last_start = start
            if token == "[UNK]":
                assert len(tok.basic_tokenize(surface)) == 1, (text, surface)
            else:
                assert piece.replace("ς", "σ") in normalized(tok, surface), (text, token, surface)
            if token != "[UNK]" and surface.isascii() and surface.isprintable():
                assert (surface.lower() if lower_case else surface) == piece, (text, token, surface)


def test_transformers_agrees_on_ordinary_english(golden) -> None:
    """transformers' BertTokenizerFast follows Google on plain English text (same vocab, same ids)."""
    transformers = pytest.importorskip("transformers")
    vocab, _, _ = golden
    text = (vocab.parents[1] / "pretraining_data" / "input_text.txt").read_text(encoding="utf-8")
    lines = [line for line in text.split("\n") if line]
    ours = [e.ids for e in BertTokenizer(vocab).encode_batch(lines)]
    hf = transformers.BertTokenizerFast(str(vocab), do_lower_case=True)
    assert ours == hf(lines, truncation=True, max_length=512)["input_ids"]


def test_transformers_agrees_hermetic(vocab_file: Path, tok: BertTokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast(str(vocab_file), do_lower_case=True)
    texts = ["The dog is good, it is!", "Hello world. Unaffable dogs", "naive cafe", "x xx xxx."]
    assert [e.ids for e in tok.encode_batch(texts)] == hf(texts)["input_ids"]


# ----------------------------------------------------------------------------- every code point


def basic_words_via_rust(tok: BertTokenizer, text: str, pipeline: str) -> list[str]:
    rust = getattr(tok, pipeline)
    return [w for w, _ in rust.pre_tokenizer.pre_tokenize_str(rust.normalizer.normalize_str(text))]


@pytest.mark.parametrize("lower_case", [True, False])
def test_every_code_point_rust_matches_reference(lower_case: bool) -> None:
    """Each code point of planes 0-3 and 14, next to letters and before a combining accent: the Rust
    pipeline gives Google's basic words unless the router sends that text to the Python path."""
    tok = BertTokenizer({t: i for i, t in enumerate(SPECIALS)}, lower_case)
    points = [*range(0xD800), *range(0xE000, 0x40000), *range(0xE0000, 0xE1000)]
    texts = [f"A{chr(c)}b {chr(c)}\u0301" for c in points]
    rust_texts = [t for t in texts if tok._route(t) == 1]
    assert len(rust_texts) > 100_000
    for i in range(0, len(rust_texts), 500):
        block = " ".join(rust_texts[i:i + 500])
        assert basic_words_via_rust(tok, block, "_full") == tok.basic_tokenize(block), block[:40]
    ascii_text = " ".join(f"A{chr(c)}b {chr(c)}x" for c in range(128))
    assert tok._route(ascii_text) == 0
    assert basic_words_via_rust(tok, ascii_text, "_ascii") == tok.basic_tokenize(ascii_text)


# ----------------------------------------------------------------------------- Google's rules, hermetic


def test_wordpiece_greedy_longest_match_first(tok: BertTokenizer) -> None:
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert tok.tokenize("abc") == ["ab", "##c"]  # longest first piece wins, not a + ##bc
    assert tok.tokenize("abd") == ["[UNK]"]  # one uncoverable piece makes the whole word [UNK]
    assert tok.tokenize("Hello, WORLD!") == ["hello", ",", "world", "!"]


def test_long_words_200_vs_201_chars(tok: BertTokenizer) -> None:
    assert tok.tokenize("x" * 200) == ["x"] + ["##x"] * 199
    assert tok.tokenize("x" * 201) == ["[UNK]"]
    assert tok.tokenize("x" * 201 + "!") == ["[UNK]", "!"]  # the limit applies after punctuation splitting
    assert tok.tokenize("x\u0301" * 200) == ["x"] + ["##x"] * 199  # and after accent stripping


def test_cjk_ideographs_are_split_with_googles_ranges(tok: BertTokenizer) -> None:
    assert tok.tokenize("中国人") == ["中", "国", "[UNK]"]
    # U+2B820..U+2B91F are in Google's Extension E range (HF's copy starts at U+2B920)
    assert tok.basic_tokenize("\U0002B820\U0002B821") == ["\U0002B820", "\U0002B821"]
    assert tok.tokenize("\U0002B820\U0002B821") == ["[UNK]", "[UNK]"]  # two words, not one
    assert len(tok.basic_tokenize("ひらがなカタカナ한국어")) == 1  # kana and Hangul are not split


def test_accents_and_case(vocab_file: Path) -> None:
    uncased, cased = BertTokenizer(vocab_file, True), BertTokenizer(vocab_file, False)
    assert uncased.tokenize("CAFÉ Naïve") == ["cafe", "naive"]
    assert uncased.tokenize("cafe\u0301") == ["cafe"]  # a decomposed accent is dropped too
    assert cased.tokenize("café naive") == ["[UNK]", "naive"]
    # Kelvin sign, Angstrom sign, dotted capital I, capital sharp s, a ligature NFD leaves alone
    assert uncased.basic_tokenize("\u212a \u212b \u0130 ẞ ﬁ") == ["k", "a", "i", "ß", "ﬁ"]
    assert uncased.basic_tokenize("ΟΔΟΣ ΣΑ") == ["οδος", "σα"]  # final sigma, as Python's str.lower()
    assert uncased.tokenize("ΟΔΟΣ") == ["οδος"]


def test_control_format_and_whitespace_characters(tok: BertTokenizer) -> None:
    assert tok.tokenize("zero\u200bwidth") == ["zero", "##width"]  # Cf deleted, not a space
    assert tok.basic_tokenize("a\x00b\ufffdc\x0bd\x85e\u00adf") == ["abcdef"]
    assert tok.basic_tokenize("a\u2028b\u2029c\u3000d\u00a0e\tf") == list("abcdef")
    assert tok.tokenize("x \ue000 x") == ["x", "[UNK]", "x"]  # private use is kept (so [UNK])
    assert tok.basic_tokenize("€5 ±x a$b «c»") == ["€5", "±x", "a", "$", "b", "«", "c", "»"]
    assert tok.tokenize("") == [] and tok.tokenize(" \u200b\t") == []
    assert tok.tokenize("a\ud800b x") == ["[UNK]", "x"]  # a lone surrogate is kept, as in Python


def test_offsets_point_into_the_original_text(tok: BertTokenizer) -> None:
    text = "Héllo,\u200b WORLD! 中国 unaffable"
    enc = tok.encode(text)
    assert enc.tokens == ["[CLS]", "hello", ",", "world", "!", "中", "国", "un", "##aff", "##able", "[SEP]"]
    spans = [text[s:e] for s, e in enc.offsets[1:-1]]
    assert spans == ["Héllo", ",", "WORLD", "!", "中", "国", "un", "aff", "able"]
    assert enc.offsets[0] == enc.offsets[-1] == (0, 0)
    assert enc.word_ids == [None, 0, 1, 2, 3, 4, 5, 6, 6, 6, None]
    sigma = tok.encode("ΟΔΟΣ hello")  # the Python path gives offsets the same way
    assert sigma.tokens[1:-1] == ["οδος", "hello"] and sigma.offsets[1:-1] == [(0, 4), (5, 10)]


# ----------------------------------------------------------------------------- encode, batches, padding


def test_pair_encoding_type_and_sequence_ids(tok: BertTokenizer) -> None:
    enc = tok.encode("Hello world", "the dog!")
    assert enc.tokens == ["[CLS]", "hello", "world", "[SEP]", "the", "dog", "!", "[SEP]"]
    assert enc.type_ids == [0, 0, 0, 0, 1, 1, 1, 1]
    assert enc.sequence_ids == [None, 0, 0, None, 1, 1, 1, None]
    assert enc.word_ids == [None, 0, 1, None, 0, 1, 2, None]
    assert enc.offsets == [(0, 0), (0, 5), (6, 11), (0, 0), (0, 3), (4, 7), (7, 8), (0, 0)]
    assert enc.num_truncated == 0 and enc.ids == tok.convert_tokens_to_ids(enc.tokens)


def google_truncate_seq_pair(na: int, nb: int, max_length: int) -> tuple[int, int]:
    """The loop of Google's _truncate_seq_pair, on lengths."""
    while na + nb > max_length - 3:
        if na > nb:
            na -= 1
        else:
            nb -= 1
    return na, nb


def test_pair_truncation_matches_googles_loop() -> None:
    for max_length in (3, 4, 7, 8, 20):
        for na in range(25):
            for nb in range(25):
                assert _truncated_lengths(na, nb, max_length) == google_truncate_seq_pair(na, nb, max_length)


def test_truncation_single_and_pair(tok: BertTokenizer) -> None:
    single = tok.encode("x x x x x", max_length=5)
    assert single.tokens == ["[CLS]", "x", "x", "x", "[SEP]"] and single.num_truncated == 2
    tie = tok.encode("a a a a", "x x x x", max_length=8)  # 4 + 4 > 5: pop B, A, B -> 3 + 2
    assert tie.tokens == ["[CLS]", "a", "a", "a", "[SEP]", "x", "x", "[SEP]"]
    assert tie.type_ids == [0] * 5 + [1] * 3 and tie.num_truncated == 3
    assert tie.sequence_ids == [None, 0, 0, 0, None, 1, 1, None]
    longer_b = tok.encode("a", "x x x x x x", max_length=8)
    assert longer_b.tokens == ["[CLS]", "a", "[SEP]", "x", "x", "x", "x", "[SEP]"]
    fits = tok.encode("a a", "x x x", max_length=8)
    assert fits.num_truncated == 0 and len(fits.ids) == 8


def test_batch_equals_single(tok: BertTokenizer) -> None:
    items = ["Hello world", ("the dog", "is good!"), "café ΟΔΟΣ", ("中国", None), "", ("x x x x x x", "a b c")]
    batch = tok.encode_batch(items, max_length=9)
    singles = [tok.encode(*(i if isinstance(i, tuple) else (i,)), max_length=9) for i in items]
    assert batch == singles
    assert all(isinstance(e, Encoding) for e in batch) and tok.encode_batch([]) == []


def test_encodings_from_the_rust_path_behave_like_plain_ones(tok: BertTokenizer) -> None:
    """Rust-path encodings read fields on first access; equality, copies, pickles, replace() still work."""
    text = "Hello, world! unaffable"
    fast = tok.encode(text)
    plain = tok._encode_full([(text, None)], False, reference=True)[0]
    assert type(fast) is Encoding and fast == plain
    assert pickle.loads(pickle.dumps(tok.encode(text))) == plain
    assert copy.deepcopy(tok.encode(text)) == plain and "_raw" not in vars(copy.copy(tok.encode(text)))
    assert dataclasses.replace(tok.encode(text), num_truncated=7) == dataclasses.replace(plain, num_truncated=7)
    assert dataclasses.asdict(tok.encode(text)) == dataclasses.asdict(plain)
    with pytest.raises(AttributeError):
        fast.not_a_field


def test_split_into_words(tok: BertTokenizer) -> None:
    enc = tok.encode(["Hello,", "wörld", "ΟΔΟΣ"], ["dogs"], is_split_into_words=True)
    assert enc.tokens == ["[CLS]", "hello", ",", "world", "οδος", "[SEP]", "dog", "##s", "[SEP]"]
    assert enc.word_ids == [None, 0, 0, 1, 2, None, 0, 0, None]
    assert enc.offsets[1:5] == [(0, 5), (5, 6), (0, 5), (0, 4)]  # spans inside each word
    assert tok.encode_batch([["a"], (["a"], ["x"])], is_split_into_words=True)[1].type_ids == [0, 0, 0, 1, 1]
    assert tok.encode([], is_split_into_words=True).tokens == ["[CLS]", "[SEP]"]


@pytest.mark.parametrize("kind", ["pt", "np"])
def test_pad_shapes(tok: BertTokenizer, kind: str) -> None:
    encs = tok.encode_batch(["hello world", "x", ("the dog", "is good")])
    out = tok.pad(encs, return_tensors=kind)
    assert set(out) == {"input_ids", "token_type_ids", "attention_mask"}
    array_type, dtype = (torch.Tensor, torch.int64) if kind == "pt" else (np.ndarray, np.int64)
    for value in out.values():
        assert isinstance(value, array_type) and tuple(value.shape) == (3, 7) and value.dtype == dtype
    assert out["input_ids"][1].tolist() == [tok.cls_id, tok.vocab["x"], tok.sep_id] + [tok.pad_id] * 4
    assert out["attention_mask"].sum(1).tolist() == [4, 3, 7]
    assert out["token_type_ids"][2].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert tuple(tok.pad(encs, pad_to=16, return_tensors=kind)["input_ids"].shape) == (3, 16)


def test_bad_inputs_raise_bertkit_error(tok: BertTokenizer) -> None:
    with pytest.raises(BertkitError, match="pad_to=3 is shorter"):
        tok.pad(tok.encode_batch(["hello world x"]), pad_to=3)
    with pytest.raises(BertkitError, match="return_tensors"):
        tok.pad([], return_tensors="tf")
    with pytest.raises(BertkitError, match=r"texts\[1\]: expected str"):
        tok.encode_batch(["ok", 5])
    with pytest.raises(BertkitError, match="max_length"):
        tok.encode("a", "b", max_length=2)
    with pytest.raises(BertkitError, match="list of str"):
        tok.encode("not words", is_split_into_words=True)
    with pytest.raises(BertkitError, match="outside the vocabulary"):
        tok.convert_ids_to_tokens([0, 10_000])
    assert tok.convert_tokens_to_ids(["hello", "nope"]) == [tok.vocab["hello"], tok.unk_id]
    assert tok.convert_ids_to_tokens([tok.cls_id, tok.mask_id]) == ["[CLS]", "[MASK]"]


# ----------------------------------------------------------------------------- vocab files and loading


def test_vocab_missing_special_tokens(tmp_path: Path) -> None:
    path = write_vocab(tmp_path / "v.txt", ["[PAD]", "[UNK]", "hello"])
    with pytest.raises(BertkitError, match=r"v\.txt: vocabulary lacks the special token\(s\) \[CLS\], \[SEP\]$"):
        BertTokenizer(path)
    no_mask = BertTokenizer(write_vocab(tmp_path / "m.txt", SPECIALS[:4] + ["a"]))  # [MASK] is optional
    with pytest.raises(BertkitError, match=r"m\.txt: vocabulary lacks \[MASK\]"):
        no_mask.mask_id


def test_load_vocab_follows_google_and_rejects_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_bytes(b"[PAD]\r\n  spaced  \nrepeat\n\nrepeat\nlast")
    assert load_vocab(path) == {"[PAD]": 0, "spaced": 1, "repeat": 4, "": 3, "last": 5}
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    for name, problem in (("empty.txt", "is empty"), ("latin1.txt", "not UTF-8"), ("missing.txt", "cannot read")):
        with pytest.raises(BertkitError, match=f"{name}: .*{problem}"):
            load_vocab(tmp_path / name)


def test_save_vocabulary_round_trip(tok: BertTokenizer, tmp_path: Path) -> None:
    path = tok.save_vocabulary(tmp_path / "out")
    assert path == tmp_path / "out" / "vocab.txt" and load_vocab(path) == tok.vocab
    assert [p.name for p in path.parent.iterdir()] == ["vocab.txt"]  # no temp file left behind
    assert len(BertTokenizer(path)) == len(tok) == len(SPECIALS + WORDS)


def test_infer_lower_case(golden, tmp_path: Path) -> None:
    vocab, _, _ = golden
    assert infer_lower_case(load_vocab(vocab)) is True
    cased = SPECIALS + ["The", "the", "A", "a", "Paris", "##S", "##s", "hello", "Hello", "world"]
    assert infer_lower_case({t: i for i, t in enumerate(cased)}) is False
    assert infer_lower_case({t: i for i, t in enumerate(SPECIALS + WORDS)}) is True


def test_load_tokenizer_from_directories(tmp_path: Path) -> None:
    cased_words = SPECIALS + ["The", "the", "Dog", "dog"]
    hf_dir, plain_dir = tmp_path / "hf", tmp_path / "plain"
    for folder in (hf_dir, plain_dir):
        folder.mkdir()
        write_vocab(folder / "vocab.txt", cased_words)
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    assert load_tokenizer(hf_dir).lower_case is True  # the config wins over the (cased-looking) vocab
    assert load_tokenizer(hf_dir / "vocab.txt").lower_case is True
    assert load_tokenizer(hf_dir, lower_case=False).lower_case is False
    assert load_tokenizer(plain_dir).lower_case is False  # inferred
    assert load_tokenizer(plain_dir).tokenize("The dog") == ["The", "dog"]
    (plain_dir / "bertkit.json").write_text(json.dumps({"do_lower_case": True}))
    assert load_tokenizer(plain_dir).tokenize("The DOG") == ["the", "dog"]


def test_load_tokenizer_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(BertkitError, match="no vocab.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(BertkitError, match="nowhere: no such file"):
        load_tokenizer(tmp_path / "nowhere")
    write_vocab(tmp_path / "vocab.txt", SPECIALS)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(BertkitError, match="tokenizer_config.json: cannot read JSON"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": "yes"}))
    with pytest.raises(BertkitError, match="tokenizer_config.json: do_lower_case must be true or false"):
        load_tokenizer(tmp_path)


def test_reference_words_keep_source_positions() -> None:
    assert _reference_words("İx Café", True) == [("ix", [0, 1]), ("cafe", [3, 4, 5, 6])]
    assert _reference_words("a\u0301b", True) == [("ab", [0, 2])]
