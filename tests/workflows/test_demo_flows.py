"""demo/flows.py, the workflow-and-events part of `make demo`, runs end to end."""

from __future__ import annotations

import subprocess
import sys

from wfkit import ROOT


def test_demo_flows_runs_a_workflow_and_events() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "flows.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "== workflow fulfillment" in out
    assert out.count("archive   succeeded") == 2  # the direct run and the event-started one
    assert "== event order.created (broadcast) → metrics, audit" in out
    assert "== event order.paid (exclusive) → fulfil" in out
    assert "(event:order.paid:" in out
    assert "2 workflow runs checkpointed" in out
