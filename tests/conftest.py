"""Shared fixtures; helpers live in support.py (importable from every test folder).

The folders mirror the packages (compiler/, runtime/, authoring/, workflows/,
security/, adoption/; the two packages' layering and public APIs here).  Tests of
internals import the private modules (`oneiricc._build...`, `oneiric._lifecycle...`)
on purpose: they test those modules.  What a user can reach is exercised through the
public APIs (test_public_api.py) and the console scripts run as real processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ROOT


@pytest.fixture
def repo_root() -> Path:
    return ROOT
