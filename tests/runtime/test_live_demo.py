"""demo/live.py end to end: sign, run, re-sign, live swap, clean shutdown."""

from __future__ import annotations

import subprocess
import sys

from conftest_paths import ROOT


def test_live_demo_swaps_the_running_runtime_and_exits_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "live.py")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "adapter:cache → redis" in result.stdout
    assert "changed adapter:cache" in result.stdout
    assert "adapter:cache → memcached" in result.stdout
    assert "exit 0" in result.stdout
