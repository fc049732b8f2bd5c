"""Documents to one-sentence-per-line text: splitting, input formats, bad files, sharding."""

from __future__ import annotations

import random

import pytest
from shared_data import require_shared

from bertkit.data.sentences import shard_name, split_documents, split_sentences
from bertkit.errors import BertkitError


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Mr. Knightley was a sensible man. Dr. Perry called at noon.", ["Mr. Knightley was a sensible man.", "Dr. Perry called at noon."]),
        ("The U.S. Congress met in Washington, D.C. on Monday. It adjourned.", ["The U.S. Congress met in Washington, D.C. on Monday.", "It adjourned."]),
        ("The rate rose to 3.5 per cent. It fell in 1934.", ["The rate rose to 3.5 per cent.", "It fell in 1934."]),
        ('"Is it you?" she asked. "Yes," he said. "It is."', ['"Is it you?" she asked.', '"Yes," he said.', '"It is."']),
        ("He came at 5 p.m. and left. She stayed!", ["He came at 5 p.m. and left.", "She stayed!"]),
        ("As Miss Lucy--Mrs. Ferrars, I mean--told me. She left.", ["As Miss Lucy--Mrs. Ferrars, I mean--told me.", "She left."]),
        ("Rig them all—Mr. Starbuck, come here. Go.", ["Rig them all—Mr. Starbuck, come here.", "Go."]),
        ('"No," said James; "you were not used to be so hard." He left.', ['"No," said James; "you were not used to be so hard."', "He left."]),
        ("William was her pride; Betsey her darling. It rained.", ["William was her pride; Betsey her darling.", "It rained."]),
        ("  Line breaks\n  are   spaces.\tTabs too. ", ["Line breaks are spaces.", "Tabs too."]),
        ("", []),
        (" \n ", []),
    ],
)
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def _write(folder, name, content):
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_formats_and_bad_files(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    files = [
        _write(src, "a_lines.txt", "CHAPTER 1.\nIt was late. Mr. Smith slept.\nHe woke.\n"),
        # hard-wrapped, Gutenberg style: a sentence runs across line breaks; blank lines end paragraphs
        _write(src, "b_wrapped.txt", "CHAPTER 2\n\nThe night was\ndark. The rain\nfell.\n\nMorning came\nat last.\n"),
        _write(src, "c_articles.txt", '<doc id="1" title="A">\nFirst one. Second.\nNext paragraph.\n</doc>\n\n'
               '<doc id="2" title="B">\n</doc>\n\n<doc id="3" title="C &amp; D">\nOnly one.\n</doc>\n\n'),
        _write(src, "d_latin1.txt", b"Caf\xe9 is open. It is late.\n"),
        _write(src, "e_empty.txt", b""),
        _write(src, "f_blank.txt", b" \n\n \n"),
        _write(src, "g_binary.txt", b"PK\x03\x04\x00\x00binary junk. More."),
        # blank lines but long lines: not hard-wrapped, each line stays a paragraph
        _write(src, "h_spaced.txt", "Heading\n\n" + "A long paragraph that goes on. " * 5 + "\n" + "Another one. " * 10 + "\n"),
    ]
    stats = split_documents(files, tmp_path / "out")
    assert [p.name for p in stats.outputs] == [shard_name(0, 1)] == ["sentences-00000-of-00001.txt"]
    text = stats.outputs[0].read_text(encoding="utf-8")
    expected_docs = [
        "CHAPTER 1.\nIt was late.\nMr. Smith slept.\nHe woke.\n",
        "CHAPTER 2\nThe night was dark.\nThe rain fell.\nMorning came at last.\n",
        "First one.\nSecond.\nNext paragraph.\n",
        "Only one.\n",
        "Caf\ufffd is open.\nIt is late.\n",
        "Heading\n" + "A long paragraph that goes on.\n" * 5 + "Another one.\n" * 10,
    ]
    assert text == "".join(f"{doc}\n" for doc in expected_docs)
    assert (stats.files, stats.documents, stats.empty_documents) == (8, 6, 1)
    assert (stats.empty_files, stats.binary_files, stats.invalid_utf8_files, stats.replaced) == (2, 1, 1, 1)
    assert stats.sentences == sum(doc.count("\n") for doc in expected_docs)
    assert stats.bytes_out == len(text.encode()) == stats.shard_bytes[0]
    assert stats.bytes_in == sum(p.stat().st_size for p in files)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sentences-00000-of-00001.txt"]
    # forcing the paragraph mode: "lines" keeps wrapped lines apart, "blocks" joins unwrapped ones
    lines = split_documents([files[1]], tmp_path / "lines", paragraphs="lines").outputs[0].read_text()
    assert "The night was\ndark.\n" in lines
    blocks = split_documents([files[0]], tmp_path / "blocks", paragraphs="blocks").outputs[0].read_text()
    assert blocks.startswith("CHAPTER 1.\nIt was late.\n")


def _random_corpus(folder, count=40):
    rng = random.Random(7)
    words = "the whale sea ship captain storm harbour rope sail wind".split()
    paths = []
    for i in range(count):
        sentences = [" ".join(rng.choices(words, k=rng.randint(3, 12))).capitalize() + "." for _ in range(rng.randint(1, 60))]
        paths.append(_write(folder, f"doc{i:02d}.txt", " ".join(sentences) + "\n"))
    return paths


def test_shards_balanced_deterministic_and_worker_independent(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _random_corpus(src)
    first = split_documents([src], tmp_path / "a", shards=4)
    again = split_documents([src], tmp_path / "b", shards=4, workers=2)
    texts = [p.read_bytes() for p in first.outputs]
    assert texts == [p.read_bytes() for p in again.outputs]
    assert [p.name for p in first.outputs] == [f"sentences-0000{i}-of-00004.txt" for i in range(4)]
    docs = [doc for text in texts for doc in text.decode().split("\n\n") if doc]
    whole = split_documents([src], tmp_path / "c").outputs[0].read_text()
    assert sorted(docs) == sorted(doc for doc in whole.split("\n\n") if doc)  # every document once, whole
    largest = max(len(doc) + 2 for doc in docs)
    assert first.shard_bytes == [len(t) for t in texts] and sum(first.shard_bytes) == len(whole.encode())
    assert max(first.shard_bytes) - min(first.shard_bytes) <= largest
    # a rerun with fewer shards replaces the old set
    split_documents([src], tmp_path / "a", shards=2)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [shard_name(0, 2), shard_name(1, 2)]


def test_user_mistakes(tmp_path):
    good = _write(tmp_path, "good.txt", "Fine.\n")
    with pytest.raises(BertkitError, match=r"missing\.txt: no such file"):
        split_documents([good, tmp_path / "missing.txt"], tmp_path / "out")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(BertkitError, match=r"nothing: directory has no \.txt files"):
        split_documents([tmp_path / "nothing"], tmp_path / "out")
    with pytest.raises(BertkitError, match="shards must be at least 1"):
        split_documents([good], tmp_path / "out", shards=0)
    with pytest.raises(BertkitError, match="paragraphs must be one of auto, lines, blocks"):
        split_documents([good], tmp_path / "out", paragraphs="words")
    with pytest.raises(BertkitError, match=r"good\.txt: exists and is not a directory"):
        split_documents([good], good)
    with pytest.raises(BertkitError, match="no input files"):
        split_documents([], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.shared
def test_real_corpus_files(tmp_path):
    speech = require_shared("corpus", "sotu", "1790-george-washington.txt")
    emma = require_shared("corpus", "books", "jane-austen-emma.txt")
    excerpt = _write(tmp_path, "emma-excerpt.txt", "\n".join(emma.read_text().splitlines()[:300]) + "\n")
    stats = split_documents([speech, excerpt], tmp_path / "out")
    text = stats.outputs[0].read_text()
    speech_doc, emma_doc = (doc.splitlines() for doc in text.split("\n\n")[:2])
    assert speech_doc[0] == "Fellow-Citizens of the Senate and House of Representatives: In meeting you again I feel much satisfaction in being able to repeat my congratulations on the favorable prospects which continue to distinguish our public affairs."
    assert len(speech_doc) == 38 and all(line.endswith(".") for line in speech_doc)
    assert stats.documents == 2 and 980 <= len(emma_doc) <= 1010 and emma_doc[:4] == ["EMMA", "By Jane Austen", "VOLUME I", "CHAPTER I"]
    assert not [line for line in emma_doc if line.endswith(("Mr.", "Mrs.", "Dr."))]
