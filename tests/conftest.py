"""Shared fixtures; helpers live in support.py (importable from every test folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ROOT


@pytest.fixture
def repo_root() -> Path:
    return ROOT
