"""Atomic writes of files and directories."""

from __future__ import annotations

import pytest

from bertkit.io import atomic_open, replace_dir, restore_dir


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_replace_dir_swaps_whole_directories(tmp_path):
    final, new = tmp_path / "best", tmp_path / "best.tmp"
    final.mkdir()
    (final / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    replace_dir(new, final)
    assert (final / "a").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_restore_dir_after_a_crash_between_the_renames(tmp_path):
    old = tmp_path / "best.old"
    old.mkdir()
    (old / "a").write_text("old")
    restore_dir(tmp_path / "best")  # the crash left only best.old
    assert (tmp_path / "best" / "a").read_text() == "old" and not old.exists()
    restore_dir(tmp_path / "best")  # nothing to do now
    assert (tmp_path / "best" / "a").read_text() == "old"
