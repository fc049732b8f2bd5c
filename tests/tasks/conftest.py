"""Fixtures for ``bertkit pretrain``: a tiny corpus made into pretraining data, tiny model configs, a launcher."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse)

from bertkit.tasks.pretrain import add_plot_command, add_pretrain_command

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GRAMMAR = {
    "det": ["the", "a", "every", "no"],
    "adj": ["big", "small", "red", "old", "quiet"],
    "noun": ["cat", "dog", "bird", "fox", "horse", "mouse"],
    "verb": ["sees", "chases", "likes", "follows"],
    "prep": ["near", "behind", "under"],
}
WORDS = [w for words in GRAMMAR.values() for w in words]
VOCAB = SPECIAL + WORDS + [".", ","]

# The launcher a subprocess (or torchrun) runs: `bertkit pretrain` without relying on cli.py's wiring.
LAUNCHER = """\
import argparse, sys
from bertkit.errors import BertkitError
from bertkit.tasks.pretrain import add_pretrain_command
parser = argparse.ArgumentParser(prog="bertkit")
add_pretrain_command(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
try:
    args.func(args)
except BertkitError as err:
    print(f"bertkit: error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def sentence(rng: random.Random) -> str:
    g = lambda part: rng.choice(GRAMMAR[part])
    words = [g("det"), g("adj"), g("noun"), g("verb"), g("det"), g("noun")]
    if rng.random() < 0.5:
        words += [g("prep"), g("det"), g("adj"), g("noun")]
    return " ".join(words) + " ."


@pytest.fixture(scope="session")
def pretraining_data(tmp_path_factory) -> Path:
    """A few hundred instances of length 32 made by `bertkit data create` from a generated corpus."""
    from bertkit.data.create import CreateConfig, create_pretraining_data

    root = tmp_path_factory.mktemp("corpus")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    rng = random.Random(0)
    docs = ["\n".join(sentence(rng) for _ in range(rng.randint(3, 7))) for _ in range(40)]
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    config = CreateConfig(max_seq_length=32, max_predictions_per_seq=5, dupe_factor=3, seed=1)
    create_pretraining_data(str(root / "corpus.txt"), root / "vocab.txt", root / "data", config, lower_case=True)
    return root / "data"


def write_config(path: Path, dropout: float = 0.1, vocab_size: int = len(VOCAB), **extra) -> Path:
    config = {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 64, "hidden_dropout_prob": dropout,
              "attention_probs_dropout_prob": dropout, **extra}
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture
def model_config(tmp_path) -> Path:
    return write_config(tmp_path / "bert_config.json")


@pytest.fixture
def config_writer():
    """write_config(path, dropout=0.1, vocab_size=len(VOCAB), **fields) -> path"""
    return write_config


@pytest.fixture
def vocab() -> list[str]:
    return list(VOCAB)


@pytest.fixture
def cli():
    """Run `bertkit pretrain ...` / `bertkit plot ...` in this process."""
    parser = argparse.ArgumentParser(prog="bertkit")
    sub = parser.add_subparsers(dest="command", required=True)
    add_pretrain_command(sub)
    add_plot_command(sub)

    def run(*args: object) -> None:
        ns = parser.parse_args([str(a) for a in args])
        ns.func(ns)
    return run


@pytest.fixture(scope="session")
def launcher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("launcher") / "pretrain_launcher.py"
    path.write_text(LAUNCHER, encoding="utf-8")
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment, with the thread count of this process (so results match bit for bit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTKIT_TEST")}
    env.update(OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_subprocess(launcher: Path, *args: object, nproc: int = 1, timeout: float = 120,
                   **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(launcher), "pretrain", *map(str, args)]
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   *command[1:]]
    return subprocess.run(command, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture
def run_pretrain_process(launcher):
    def run(*args: object, nproc: int = 1, **env: str) -> subprocess.CompletedProcess:
        return run_subprocess(launcher, *args, nproc=nproc, **env)
    return run
