"""Checkpoints: atomic, pruned, refusing to mix runs, surviving a full disk."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
import torch

from bertkit.errors import BertkitError
from bertkit.training import checkpoint as C
from bertkit.training.distributed import Dist


def save(run, step, keep=3):
    shared = {"model": {"w": torch.full((2,), float(step))}}
    return C.save_checkpoint(run, step, shared, {"data": {"position": step}}, {"note": "x"}, Dist(), keep)


def test_save_list_prune(tmp_path):
    for step in (1, 2, 3, 4):
        save(tmp_path, step, keep=2)
    assert [p.name for p in C.list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    latest = C.latest_checkpoint(tmp_path)
    shared, mine = C.load_checkpoint(latest, rank=0, world_size=1)
    assert shared["model"]["w"].tolist() == [4.0, 4.0] and mine["data"] == {"position": 4}
    assert C.read_meta(latest) == {"step": 4, "world_size": 1, "note": "x"}
    assert save(tmp_path, 4) == latest  # the same step again: kept as it is
    assert not list((tmp_path / C.CHECKPOINTS).glob(".tmp-*"))


def test_incomplete_write_is_cleaned_and_ignored(tmp_path):
    save(tmp_path, 1)
    stale = tmp_path / C.CHECKPOINTS / ".tmp-step-00000002"
    stale.mkdir()
    (stale / "trainer.pt").write_bytes(b"half")
    assert C.latest_checkpoint(tmp_path).name == "step-00000001"
    assert C.remove_incomplete(tmp_path) == [stale] and not stale.exists()


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    previous = save(tmp_path, 1)
    real = C.write_file

    def full_disk(path, obj):
        if path.name == C.TRAINER_FILE:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(C, "write_file", full_disk)
    with pytest.raises(BertkitError, match="disk is full.*previous checkpoint .*step-00000001 is intact"):
        save(tmp_path, 2)
    assert C.list_checkpoints(tmp_path) == [previous]
    assert not list((tmp_path / C.CHECKPOINTS).glob(".tmp-*"))
    assert C.load_checkpoint(previous, 0, 1)[0]["model"]["w"].tolist() == [1.0, 1.0]


def test_resume_point_refuses_to_mix_runs(tmp_path):
    with pytest.raises(BertkitError, match="nothing to resume"):
        C.resume_point(tmp_path, resume=True)
    assert C.resume_point(tmp_path, resume=False) is None
    save(tmp_path, 5)
    with pytest.raises(BertkitError, match="already holds a run.*--resume"):
        C.resume_point(tmp_path, resume=False)
    assert C.resume_point(tmp_path, resume=True).name == "step-00000005"


def test_world_size_must_match(tmp_path):
    path = save(tmp_path, 1)
    with pytest.raises(BertkitError, match="written by 1 processes"):
        C.load_checkpoint(path, rank=0, world_size=2)


def test_rng_state_round_trips(tmp_path):
    C.seed_everything(3)
    state = C.rng_state()
    C.write_file(tmp_path / "rng.pt", state)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    C.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
