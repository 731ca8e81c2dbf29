"""Shared fixtures: the repository root, and a runner for the real command lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return ROOT


def run_cli(
    program: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m <program> args` as a real process (exit codes, streams, no shared state)."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", program, *args],
        cwd=cwd or ROOT,
        env=full_env,
        text=True,
        capture_output=True,
        timeout=120,
    )
