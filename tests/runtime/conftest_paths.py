"""Paths shared by the runtime tests."""

from __future__ import annotations

from pathlib import Path

RUNTIME_TESTS = Path(__file__).resolve().parent
ROOT = RUNTIME_TESTS.parent.parent
