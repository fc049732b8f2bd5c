"""The one exception type for user mistakes (bad files, bad arguments).

The CLI turns a BertkitError into one line on stderr and exit code 2, with no traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class BertkitError(Exception):
    """A problem with the user's input; the message names the file or field and the problem."""


def file_error(path: str | Path, problem: str) -> BertkitError:
    """Build a BertkitError that starts with the file it is about: ``PATH: problem``."""
    return BertkitError(f"{path}: {problem}")
