"""Quiet, consistent command lines: warnings-only logs, counted nouns, one exit rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from minikit import cli, write_mini
from oneiric._text import plural


def test_plural() -> None:
    assert [plural(n, "workflow") for n in (0, 1, 2)] == [
        "0 workflows",
        "1 workflow",
        "2 workflows",
    ]
    assert plural(1, "error") == "1 error"
    assert plural(3, "entry", "entries") == "3 entries"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_mini(tmp_path / "project")
    built = cli("oneiricc", "build", cwd=root)
    assert built.returncode == 0, built.stderr
    assert "1 workflow," in built.stdout
    assert "1 route," in built.stdout
    return root


def _no_logs(stderr: str) -> None:
    assert not [line for line in stderr.splitlines() if line.startswith("{")], stderr


def test_one_shot_commands_log_warnings_only_unless_verbose(project: Path) -> None:
    plan = ["--unsigned-plan", "golden/dev.plan.json", "--state", "state"]
    wf = cli("oneiric", "workflow", "run", "hello", *plan, cwd=project)
    assert wf.returncode == 0, wf.stderr
    assert "SUCCEEDED" in wf.stdout
    _no_logs(wf.stderr)
    ev = cli("oneiric", "event", "emit", "order.created", *plan, cwd=project)
    assert ev.returncode == 0, ev.stderr
    assert "1 handler" in ev.stdout
    assert "handler(s)" not in ev.stdout
    assert "1 attempt " in ev.stdout
    _no_logs(ev.stderr)
    act = cli("oneiric", "action", "invoke", "shout", "--payload", '"hi"', *plan, cwd=project)
    assert act.returncode == 0, act.stderr
    assert json.loads(act.stdout) == "HI"
    _no_logs(act.stderr)
    loud = cli("oneiric", "workflow", "run", "hello", "-v", *plan, cwd=project)
    assert loud.returncode == 0, loud.stderr
    assert any(line.startswith("{") for line in loud.stderr.splitlines())


def test_run_logs_warnings_only_unless_verbose(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"LOG_LEVEL", "PYTHONPATH"}}
    run = [sys.executable, "-m", "oneiric", "run", "--unsigned-plan", "golden/dev.plan.json"]
    logged = {}
    for flags in ((), ("-v",)):
        proc = subprocess.Popen(
            [*run, "--state", f"state{len(flags)}", *flags],
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = cli("oneiric", "status", "--state", f"state{len(flags)}", cwd=project)
            if status.returncode == 0 and " running" in status.stdout.splitlines()[0]:
                break
            time.sleep(0.1)
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        logged[flags] = [line for line in stderr.splitlines() if line.startswith("{")]
    assert logged[()] == []
    assert any("applied" in line for line in logged[("-v",)])


def test_a_refused_plan_exits_1_from_every_command(project: Path) -> None:
    tasks = project / "src" / "myapp" / "tasks.py"
    tasks.write_text(tasks.read_text() + "\n# edited after the build\n")
    events = project / "src" / "myapp" / "events.py"
    events.write_text(events.read_text() + "\n# edited after the build\n")
    plan = ["--unsigned-plan", "golden/dev.plan.json", "--state", "state"]
    for args in (
        ("run", *plan),
        ("workflow", "run", "hello", *plan),
        ("event", "emit", "order.created", *plan),
        ("action", "invoke", "shout", *plan),
    ):
        result = cli("oneiric", *args, cwd=project)
        assert result.returncode == 1, (args, result.stderr)
        assert "pin mismatch" in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_status_of_an_unsigned_plan_prints_no_none(project: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"LOG_LEVEL", "PYTHONPATH"}},
        "NO_COLOR": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "oneiric", "run", "--unsigned-plan", "golden/dev.plan.json"],
        cwd=project,
        env={**env, "ONEIRIC_STATE": "state"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            status = cli("oneiric", "status", "--state", "state", cwd=project)
            if status.returncode == 0 and " running" in status.stdout.splitlines()[0]:
                break
            time.sleep(0.1)
        assert status is not None
        assert status.returncode == 0, status
        assert "None" not in status.stdout, status.stdout
        assert "no serial (unsigned)" in status.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)
