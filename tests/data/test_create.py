"""bertkit data create on tiny hermetic inputs: layout, determinism, formats, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pretrain_fixtures import VOCAB, write_corpus, write_vocab

from bertkit.data import corpus, create
from bertkit.data.create import CreateConfig, create_pretraining_data
from bertkit.data.dataset import PretrainingDataset
from bertkit.data.masking import MaskRule, num_to_predict
from bertkit.data.tfrecord import read_examples
from bertkit.errors import BertkitError

CONFIG = CreateConfig(max_seq_length=32, max_predictions_per_seq=5, dupe_factor=3, seed=7)


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of a few hundred tokens, so the tiny corpus makes several."""
    monkeypatch.setattr(create, "_MIN_SHARD_TOKENS", 300)


def _make(tmp_path: Path, name: str = "out", config: CreateConfig = CONFIG, **kw) -> tuple[Path, dict]:
    inputs = kw.pop("inputs", None) or str(tmp_path / "corpus-*.txt")
    if not list(tmp_path.glob("corpus-*.txt")):
        write_corpus(tmp_path)
    vocab = tmp_path / "vocab.txt" if (tmp_path / "vocab.txt").exists() else write_vocab(tmp_path)
    out = tmp_path / name
    return out, create_pretraining_data(inputs, vocab, out, config, lower_case=True, **kw)


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.startswith("shard-")}


def test_output_layout_and_manifest(tmp_path, small_shards):
    out, manifest = _make(tmp_path)
    names = sorted(p.name for p in out.iterdir())
    shards = [s["file"] for s in manifest["shards"]]
    assert names == sorted(["manifest.json", "vocab.txt", *shards]) and len(shards) > 1, "no .work left"
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["parameters"] == {
        "max_seq_length": 32, "max_predictions_per_seq": 5, "masked_lm_prob": 0.15, "dupe_factor": 3,
        "short_seq_prob": 0.1, "whole_word_mask": False, "do_lower_case": True, "seed": 7,
        "dynamic_masking": False, "google_rng": False, "format": "bertkit"}
    assert manifest["vocab"]["size"] == len(VOCAB) and manifest["token_dtype"] == "uint16"
    assert manifest["input"]["documents"] == 24 and manifest["input"]["files"] == sorted(
        str(p) for p in tmp_path.glob("corpus-*.txt"))
    dataset = PretrainingDataset(out)
    assert len(dataset) == manifest["num_instances"] == sum(s["instances"] for s in manifest["shards"])
    assert dataset.vocab_size == len(VOCAB) and dataset.max_token_id < len(VOCAB)


def test_instances_follow_googles_layout(tmp_path):
    out, _ = _make(tmp_path)
    b = PretrainingDataset(out).get_batch(np.arange(len(PretrainingDataset(out))))
    real = b["attention_mask"].astype(bool)
    lengths = real.sum(1)
    rows = np.arange(len(lengths))
    assert (b["input_ids"][:, 0] == 2).all() and (b["input_ids"][rows, lengths - 1] == 3).all()
    a_lengths = (real & (b["token_type_ids"] == 0)).sum(1)
    assert (b["input_ids"][rows, a_lengths - 1] == 3).all() and (a_lengths >= 3).all() and (lengths - a_lengths >= 2).all()
    assert (b["input_ids"][~real] == 0).all() and (b["token_type_ids"][~real] == 0).all()
    counts = b["masked_lm_weights"].sum(1)
    assert (counts == num_to_predict(lengths, MaskRule(5, 0.15, False))).all()
    assert 0.4 < b["next_sentence_labels"].mean() < 0.8


def test_same_bytes_for_any_number_of_workers(tmp_path, small_shards, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 2000)  # several tokenization chunks too
    one, m1 = _make(tmp_path, "one", workers=1)
    two, m2 = _make(tmp_path, "two", workers=2)
    assert len(m1["shards"]) > 2
    assert _shard_bytes(one) == _shard_bytes(two)
    assert {k: v for k, v in m1.items() if k != "seconds"} == {k: v for k, v in m2.items() if k != "seconds"}


def test_chunk_boundaries_do_not_change_the_documents(tmp_path, monkeypatch):
    """Chunks cut anywhere between lines (blank lines included) give the same token store."""
    _, whole = _make(tmp_path, "whole")
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 37)
    _, cut = _make(tmp_path, "cut")
    assert whole["input"] == cut["input"]
    assert _shard_bytes(tmp_path / "whole") == _shard_bytes(tmp_path / "cut")


def test_tfrecord_format_is_the_same_instances_in_shuffled_order(tmp_path, small_shards):
    out, manifest = _make(tmp_path, "bk")
    tf_out, tf_manifest = _make(tmp_path, "tf", CreateConfig(**{**CONFIG.__dict__, "output_format": "tfrecord"}))
    assert [p.name for p in sorted(tf_out.glob("shard-*"))] == [s["file"] for s in tf_manifest["shards"]]
    records = [r for s in tf_manifest["shards"] for r in read_examples(tf_out / s["file"])]
    bertkit = PretrainingDataset(out)
    expected = bertkit.get_batch(bertkit.order(CONFIG.seed, 0))
    names = {"input_ids": "input_ids", "input_mask": "attention_mask", "segment_ids": "token_type_ids",
             "masked_lm_positions": "masked_lm_positions", "masked_lm_ids": "masked_lm_ids",
             "masked_lm_weights": "masked_lm_weights", "next_sentence_labels": "next_sentence_labels"}
    assert len(records) == len(bertkit) and set(records[0]) == set(names)
    for google, ours in names.items():
        assert np.array_equal(np.stack([r[google] for r in records]).reshape(expected[ours].shape), expected[ours])
    for key in ("num_instances", "num_tokens", "num_predictions", "max_token_id"):
        assert tf_manifest[key] == manifest[key], key
    reread = PretrainingDataset(tf_out)  # a tfrecord directory with a manifest
    assert len(reread) == len(bertkit) and reread.get_batch([3])["input_ids"].tolist() == [records[3]["input_ids"].tolist()]


def test_dynamic_masking_differs_per_epoch_and_is_reproducible(tmp_path):
    config = CreateConfig(**{**CONFIG.__dict__, "dynamic_masking": True, "whole_word_mask": True})
    out, manifest = _make(tmp_path, config=config)
    assert manifest["num_predictions"] == 0
    data = PretrainingDataset(out)
    idx = np.arange(len(data))
    e0, e0_again, e1 = data.get_batch(idx, epoch=0), PretrainingDataset(out).get_batch(idx, epoch=0), data.get_batch(idx, epoch=1)
    assert all(np.array_equal(e0[k], e0_again[k]) for k in e0)
    assert not np.array_equal(e0["masked_lm_positions"], e1["masked_lm_positions"])
    assert np.array_equal(e0["attention_mask"], e1["attention_mask"]), "only the masks change"
    lengths = e0["attention_mask"].sum(1)
    assert (e0["masked_lm_weights"].sum(1) <= num_to_predict(lengths, MaskRule(5, 0.15, True))).all()
    static = _make(tmp_path, "static", CreateConfig(**{**CONFIG.__dict__, "whole_word_mask": True}))[0]
    unmasked = e0["input_ids"].copy()
    slot = e0["masked_lm_weights"] > 0
    unmasked[np.nonzero(slot)[0], e0["masked_lm_positions"][slot]] = e0["masked_lm_ids"][slot]
    s = PretrainingDataset(static).get_batch(idx)
    restored = s["input_ids"].copy()
    slot = s["masked_lm_weights"] > 0
    restored[np.nonzero(slot)[0], s["masked_lm_positions"][slot]] = s["masked_lm_ids"][slot]
    assert np.array_equal(unmasked, restored), "the same instances as static masking, unmasked"
    data.set_epoch(1)
    assert np.array_equal(data[5]["input_ids"], e1["input_ids"][5])


# ----------------------------------------------------------------------------- interruption and reruns


def test_finished_output_is_refused_unless_overwrite(tmp_path):
    _, first = _make(tmp_path)
    with pytest.raises(BertkitError, match="already holds finished pretraining data"):
        _make(tmp_path)
    _, again = _make(tmp_path, overwrite=True)
    assert again["num_instances"] == first["num_instances"]


def test_foreign_files_in_the_output_are_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(BertkitError, match="did not write"):
        _make(tmp_path, overwrite=True)


def test_interrupted_run_resumes_to_the_same_output(tmp_path, small_shards, monkeypatch):
    _, clean = _make(tmp_path, "clean")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(create, "_manifest", interrupt)
        with pytest.raises(KeyboardInterrupt):
            _make(tmp_path)
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists() and (out / ".work" / "run.json").exists()
    shards = sorted(out.glob("shard-*.bin"))
    kept = shards[0].stat().st_mtime_ns
    shards[1].write_bytes(shards[1].read_bytes()[:100])  # damaged
    shards[2].unlink()  # missing
    (out / ".shard-00003.bin.x.tmp").write_bytes(b"partial")
    _, resumed = _make(tmp_path)
    assert shards[0].stat().st_mtime_ns == kept, "complete shards are kept"
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "clean")
    assert resumed["num_instances"] == clean["num_instances"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("shard-")) == ["manifest.json", "vocab.txt"]


def test_interrupted_run_with_other_parameters_restarts(tmp_path, small_shards, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(create, "_manifest", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            _make(tmp_path)
    other = CreateConfig(**{**CONFIG.__dict__, "seed": 8})
    out, _ = _make(tmp_path, config=other)
    _make(tmp_path, "fresh", other)
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "fresh")


# ----------------------------------------------------------------------------- bad input


def test_bad_files_are_skipped_and_counted(tmp_path):
    write_corpus(tmp_path, files=1)
    (tmp_path / "corpus-empty.txt").write_bytes(b"")
    (tmp_path / "corpus-binary.txt").write_bytes(b"\x00\x01\x02kalo\x00" * 50)
    (tmp_path / "corpus-latin1.txt").write_bytes("kalo mi caf\xe9 .\nnu pe .\n\n\x01\x02\n\nso tu .\n".encode("latin-1"))
    (tmp_path / "corpus-lonely.txt").write_text("kalo mi nu .\n", encoding="utf-8")
    _, manifest = _make(tmp_path)
    report = manifest["input"]
    assert [Path(p).name for p in report["empty_files"]] == ["corpus-empty.txt"]
    assert [Path(p).name for p in report["binary_files"]] == ["corpus-binary.txt"]
    assert report["replaced_characters"] == 1 and report["dropped_lines"] == 1
    assert report["one_segment_documents"] >= 2  # "so tu ." and the lonely file
    assert manifest["num_instances"] > 0


@pytest.mark.parametrize("missing", ["[CLS]", "[SEP]", "[MASK]"])
def test_vocab_without_special_tokens_is_an_error(tmp_path, missing):
    write_corpus(tmp_path, files=1)
    write_vocab(tmp_path, drop=missing)
    with pytest.raises(BertkitError, match=rf"lacks .*\{missing[:-1]}\]"):
        _make(tmp_path)


def test_impossible_parameters_are_errors(tmp_path):
    with pytest.raises(BertkitError, match="more than a sequence of 16 tokens can hold"):
        CreateConfig(max_seq_length=16, max_predictions_per_seq=14)
    with pytest.raises(BertkitError, match="max_seq_length"):
        CreateConfig(max_seq_length=4)
    with pytest.raises(BertkitError, match="dynamic masking"):
        CreateConfig(dynamic_masking=True, output_format="tfrecord")
    with pytest.raises(BertkitError, match="dupe_factor"):
        CreateConfig(dupe_factor=0)
    with pytest.raises(BertkitError, match="workers"):
        _make(tmp_path, workers=0)


def test_directories_stand_for_their_visible_files(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".hidden").mkdir()
    for path in ("d/b.txt", "d/sub/a.txt", "d/.hidden/c.txt", "d/.d.txt"):
        (tmp_path / path).write_text("x\n")
    assert corpus.expand_inputs(f"{tmp_path / 'd'},{tmp_path / 'd' / 'b.txt'}") == [
        tmp_path / "d" / "b.txt", tmp_path / "d" / "sub" / "a.txt", tmp_path / "d" / "b.txt"]


def test_inputs_with_no_text_are_errors(tmp_path):
    write_vocab(tmp_path)
    with pytest.raises(BertkitError, match="nothing matches"):
        _make(tmp_path, inputs=str(tmp_path / "nothing-*.txt"))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n\n  \n")
    with pytest.raises(BertkitError, match="no text"):
        _make(tmp_path, inputs=str(tmp_path / "empty.txt"))
    with pytest.raises(BertkitError, match="no tokens"):
        _make(tmp_path, inputs=str(tmp_path / "blank.txt"))
