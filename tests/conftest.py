"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_data import require_shared


@pytest.fixture
def golden_dir() -> Path:
    return require_shared("golden", "google", "dev")
