"""Training checkpoints: written atomically, the newest K kept, everything a resume needs.

``RUN/checkpoints/step-00001000/`` holds

- ``trainer.pt``: model, optimizer, schedule, loss scaler and the loop's counters (rank 0 writes it);
- ``rank-00000.pt``, one per rank: that rank's RNG states (python, numpy, torch CPU, CUDA) and its
  data position;
- ``meta.json``: the step and what the task needs to rebuild the model, readable without torch.

A checkpoint is written into ``.tmp-step-...`` beside it, every file fsynced, and the directory
renamed into place only when complete; older checkpoints are deleted only after that. A run killed
while writing leaves a ``.tmp-`` directory, removed when the run resumes, and the previous
checkpoint intact. A failed write (a full disk) removes its temp directory and raises a
BertkitError that names the surviving checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit.errors import BertkitError
from bertkit.training.distributed import Dist, all_reduce, barrier

CHECKPOINTS = "checkpoints"
TRAINER_FILE = "trainer.pt"
META_FILE = "meta.json"
_NAME = re.compile(r"step-(\d{8,})")
# Test hook: "checkpoint:N" SIGKILLs this process while it writes the checkpoint of step N (its
# files written, the directory not yet renamed); "step:N" right after step N. Used by the tests
# that kill a run and resume it.
TEST_KILL_ENV = "BERTKIT_TEST_KILL"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.pt"


def list_checkpoints(run: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    root = Path(run) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def latest_checkpoint(run: str | Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def read_meta(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / META_FILE).read_text(encoding="utf-8"))


def resume_point(run: str | Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a new run); refuses to mix up runs.

    Without ``resume`` a directory that already holds checkpoints is an error (a new run would
    interleave with the old one); with it, a directory holding none is.
    """
    latest = latest_checkpoint(run)
    if resume and latest is None:
        raise BertkitError(f"{run}: nothing to resume (no checkpoints in {Path(run) / CHECKPOINTS})")
    if not resume and latest is not None:
        raise BertkitError(f"{run} already holds a run (last checkpoint {latest.name}): pass --resume to "
                           "continue it, or choose another --output")
    return latest


# --- RNG state --------------------------------------------------------------------------------


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every RNG the loop may draw from: python's, numpy's global, torch's CPU and CUDA generators."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- writing ----------------------------------------------------------------------------------


def save_checkpoint(run: str | Path, step: int, shared: dict[str, Any] | None, per_rank: dict[str, Any],
                    meta: dict[str, Any], d: Dist, keep: int) -> Path:
    """Write checkpoint ``step`` atomically (every rank calls this; rank 0 passes ``shared``).

    Returns its directory. An existing checkpoint of the same step is kept as it is.
    """
    root = Path(run) / CHECKPOINTS
    final, tmp = root / checkpoint_name(step), root / f".tmp-{checkpoint_name(step)}"
    if final.is_dir():
        return final
    if d.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    failure = _write_files(tmp, step, shared, per_rank, meta, d)
    failed = all_reduce(torch.tensor([0.0 if failure is None else 1.0], device=d.device), d, op="max")
    if failed.item():
        if d.main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(final, failure, latest_checkpoint(run))
    if d.main:
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
        _prune(run, keep)
    barrier(d)
    return final


def _write_files(tmp: Path, step: int, shared: dict[str, Any] | None, per_rank: dict[str, Any],
                 meta: dict[str, Any], d: Dist) -> OSError | None:
    try:
        write_file(tmp / rank_file(d.rank), per_rank)
        if d.main:
            write_file(tmp / TRAINER_FILE, shared)
            text = json.dumps({"step": step, "world_size": d.world_size, **meta}, indent=2, sort_keys=True)
            write_file(tmp / META_FILE, text + "\n")
            kill_hook("checkpoint", step)
    except OSError as err:
        return err
    return None


def write_file(path: Path, obj: Any) -> None:
    """torch.save ``obj`` (or write a str) to ``path`` and fsync it."""
    with open(path, "wb") as handle:
        if isinstance(obj, str):
            handle.write(obj.encode("utf-8"))
        else:
            torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _write_error(final: Path, failure: OSError | None, previous: Path | None) -> BertkitError:
    why = "another rank failed to write its part" if failure is None else \
        (failure.strerror or str(failure)) + (" (the disk is full)" if failure.errno == errno.ENOSPC else "")
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    return BertkitError(f"could not write checkpoint {final}: {why}; {kept}. Training stopped.")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(run: str | Path, keep: int) -> None:
    for old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def remove_incomplete(run: str | Path) -> list[Path]:
    """Delete the ``.tmp-`` directories of checkpoint writes that never finished."""
    root = Path(run) / CHECKPOINTS
    stale = [p for p in root.glob(".tmp-step-*")] if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


# --- reading ----------------------------------------------------------------------------------


def load_checkpoint(checkpoint: Path, rank: int, world_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(shared state, this rank's state) of a checkpoint; the number of ranks must match."""
    saved = read_meta(checkpoint).get("world_size", 1)
    if saved != world_size:
        raise BertkitError(f"{checkpoint} was written by {saved} processes; resume it with as many "
                           f"(this run has {world_size})")
    try:
        shared = torch.load(checkpoint / TRAINER_FILE, map_location="cpu", weights_only=True)
        mine = torch.load(checkpoint / rank_file(rank), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise BertkitError(f"{checkpoint}: cannot read the checkpoint ({err})") from None
    return shared, mine


def kill_hook(event: str, step: int) -> None:
    """The kill test hook (see TEST_KILL_ENV); does nothing unless the variable names this event."""
    if os.environ.get(TEST_KILL_ENV) == f"{event}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
