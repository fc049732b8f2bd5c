"""Atomic file writes: a temp file in the same directory, fsync, then rename into place.

An interrupted run therefore never leaves a file that looks complete but is not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    _default_mode(tmp)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def temp_path_beside(path: str | Path) -> Path:
    """A fresh temp file name in ``path``'s directory, for writers that need a path, not a handle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    _default_mode(tmp)
    return Path(tmp)


def _default_mode(path: str) -> None:
    """mkstemp makes files private (0600); give them the mode a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def replace_dir(new: str | Path, final: str | Path) -> Path:
    """Put the finished directory ``new`` at ``final``, replacing what is there.

    The old directory is first renamed aside, so at every moment ``final`` is either the old
    complete directory or the new one (``restore_dir`` puts the old one back after a crash
    between the two renames).
    """
    new, final = Path(new), Path(final)
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def restore_dir(final: str | Path) -> None:
    """Undo an interrupted ``replace_dir``: bring back ``final.old`` when ``final`` is missing."""
    final = Path(final)
    old = final.with_name(final.name + ".old")
    if old.exists() and not final.exists():
        os.replace(old, final)
