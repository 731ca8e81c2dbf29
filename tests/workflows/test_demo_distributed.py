"""`make demo-distributed`: two runtimes and two workers on a private Redis and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest
from servers import need
from wfkit import ROOT


@pytest.mark.slow
def test_the_distributed_demo_finishes_every_run_after_a_runtime_is_killed() -> None:
    need("redis-server")
    need("initdb")
    done = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "distributed.py")],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "killed runtime-1 (SIGKILL) with runs in flight" in out
    assert out.count(" succeeded  event:order.paid:") == 8
    assert "runs: {'succeeded': 8}" in out
