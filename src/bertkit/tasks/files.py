"""Reading the task data files: text lines and JSON Lines, with errors that name the file and line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bertkit.errors import file_error


def _open(path: Path) -> IO[str]:
    """Text in UTF-8 (a BOM dropped), lines ended by "\\n" only; .gz files decompressed."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="\n")
    return open(path, encoding="utf-8-sig", newline="\n")


def read_lines(path: str | Path) -> list[str]:
    """The file's lines without their "\\n" (or "\\r\\n"); a lone "\\r" or U+2028 is not a line end."""
    try:
        with _open(Path(path)) as f:
            return [line.rstrip("\n").removesuffix("\r") for line in f]
    except OSError as e:
        raise file_error(path, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise file_error(path, f"not UTF-8 text (byte {e.start})") from None
    except EOFError:
        raise file_error(path, "truncated gzip file") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a .jsonl (or .jsonl.gz) file; a line that is
    not a JSON object raises BertkitError naming the file and line."""
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise file_error(path, f"line {number}: not JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise file_error(path, f"line {number}: expected a JSON object")
        yield number, record
