"""The one exception type for user mistakes (bad files, bad arguments).

The CLI turns a BertkitError into one line on stderr and exit code 2, with no traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class BertkitError(Exception):
    """A problem with the user's input; the message names the file or field and the problem."""


def file_error(path: str | Path, problem: str) -> BertkitError:
    """Build a BertkitError that starts with the file it is about: ``PATH: problem``."""
    return BertkitError(f"{path}: {problem}")


def check_resume_state(saved: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str], what: str) -> None:
    """Refuse to resume from a saved position whose ``keys`` differ from ``current``'s.

    ``what`` names the thing resuming in the message ("this iterator", "these batches").
    """
    for key in keys:
        if saved.get(key) != current[key]:
            raise BertkitError(f"cannot resume: the saved position has {key}={saved.get(key)!r}, "
                               f"{what} {current[key]!r}")
