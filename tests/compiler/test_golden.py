"""The committed plans in golden/ are exactly what the sources in stacks/ compile to."""

from __future__ import annotations

from support import run_cli


def test_golden_plans_are_current() -> None:
    result = run_cli("oneiricc", "build", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stderr
