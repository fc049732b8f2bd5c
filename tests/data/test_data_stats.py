"""bertkit data stats (checked against a plain per-instance count) and the data CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pretrain_fixtures import VOCAB, write_corpus, write_vocab

from bertkit import cli
from bertkit.data.create import CreateConfig, create_pretraining_data
from bertkit.data.dataset import PretrainingDataset
from bertkit.data.stats import data_stats, format_stats


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stats")
    write_corpus(tmp, files=1, documents=25)
    config = CreateConfig(max_seq_length=24, max_predictions_per_seq=4, dupe_factor=3, seed=1, whole_word_mask=True)
    create_pretraining_data(str(tmp / "corpus-0.txt"), write_vocab(tmp), tmp / "out", config, lower_case=True)
    return tmp / "out"


def _plain_counts(dataset: PretrainingDataset) -> dict:
    """The statistics one instance at a time, in plain Python."""
    kinds, lengths, words, full = {"mask": 0, "kept": 0, "random": 0}, [], 0, 0
    for i in range(len(dataset)):
        x = {k: v.tolist() for k, v in dataset[i].items()}
        n = sum(x["attention_mask"])
        a = sum(1 for t, m in zip(x["token_type_ids"], x["attention_mask"]) if m and t == 0)
        lengths.append(n)
        original = list(x["input_ids"][:n])
        masked = set()
        for pos, label, w in zip(x["masked_lm_positions"], x["masked_lm_ids"], x["masked_lm_weights"]):
            if w:
                now = original[pos]
                kinds["mask" if now == 4 else "kept" if now == label else "random"] += 1
                original[pos] = label
                masked.add(pos)
        groups: list[list[int]] = []
        for pos in range(1, n - 1):
            if pos == a - 1:
                continue
            if groups and VOCAB[original[pos]].startswith("##"):
                groups[-1].append(pos)
            else:
                groups.append([pos])
        hits = [sum(p in masked for p in g) for g in groups]
        words += sum(h > 0 for h in hits)
        full += sum(h == len(g) for h, g in zip(hits, groups) if h)
    return {"lengths": lengths, "kinds": kinds, "words": words, "full": full}


def test_stats_agree_with_a_plain_count(data_dir):
    dataset = PretrainingDataset(data_dir)
    stats, plain = data_stats(data_dir), _plain_counts(dataset)
    assert stats["num_instances"] == len(dataset)
    lengths = np.array(plain["lengths"])
    rl = stats["real_length"]
    assert (rl["min"], rl["max"], rl["median"]) == (lengths.min(), lengths.max(), float(np.median(lengths)))
    assert rl["mean"] == pytest.approx(lengths.mean()) and sum(b["count"] for b in rl["histogram_bins_of_8"]) == len(lengths)
    assert [b["range"] for b in rl["histogram_bins_of_8"]] == ["1-8", "9-16", "17-24"]
    mp = stats["masked_positions"]
    assert mp["counts"] == plain["kinds"] and mp["masked_words"] == plain["words"]
    assert mp["fraction_of_masked_words_fully_masked"] == plain["full"] / plain["words"] == 1.0
    assert mp["fraction_instances_equal_to_num_to_predict"] > 0.9
    assert "random next" in format_stats(stats)


def test_cli_create_and_stats(tmp_path, capsys):
    write_corpus(tmp_path, files=1)
    vocab = write_vocab(tmp_path)
    argv = ["data", "create", "--input", str(tmp_path / "corpus-*.txt"), "--vocab", str(vocab), "--output",
            str(tmp_path / "out"), "--max-seq-length", "32", "--max-predictions-per-seq", "5", "--dupe-factor", "2",
            "--do-lower-case", "--workers", "1", "--whole-word-mask"]
    assert cli.main(argv) == 0
    assert "instances in 1 bertkit shard(s)" in capsys.readouterr().err
    assert cli.main(["data", "stats", str(tmp_path / "out"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_instances"] == len(PretrainingDataset(tmp_path / "out"))
    assert stats["masked_positions"]["fraction_of_masked_words_fully_masked"] == 1.0
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertkit: error: ") and "--overwrite" in err and err.count("\n") == 1
    assert cli.main([*argv[:-1], "--max-predictions-per-seq", "30", "--overwrite"]) == 2
    assert "more than a sequence of 32 tokens can hold" in capsys.readouterr().err
