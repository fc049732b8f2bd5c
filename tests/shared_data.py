"""Where ../shared lives, and skipping cleanly when it is absent.

A module of its own (not conftest.py): test folders have conftest.py files of their own, and
``from shared_data import ...`` would pick whichever was imported first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BERTKIT_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden" / "google" / "dev"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def require_shared(*parts: str) -> Path:
    """Return ``../shared/<parts>``, or skip the test with a clear message when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared is absent on this machine)")
    return path
