"""`oneiric workflow ...` as real processes: SIGKILL mid-run and resume, cancel, bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import wftasks
from test_workflows import task
from wfkit import ROOT, build_plan, cli_env, oneiric, wait_for

CHAIN = "\n".join(
    [
        task("a"),
        task("b", sleep_ms=2500),
        task("c"),
        '  workflow chain "x" {',
        "    a -> b -> c",
        "  }",
    ]
)


def started(log: str, name: str) -> int:
    return sum(1 for e in wftasks.calls(log, "start") if e["name"] == name)


def spawn(*args: str, log: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "oneiric", *args],
        env=cli_env({"WF_LOG": log}),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def only_run(state: Path) -> dict[str, object]:
    listed = oneiric("workflow", "list", "--state", str(state), "--format", "json")
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)["runs"]
    return run


def test_sigkill_mid_run_then_resume_runs_no_completed_node_again(tmp_path: Path) -> None:
    _, plan = build_plan(tmp_path, CHAIN)
    log, state = str(tmp_path / "calls.jsonl"), tmp_path / "state"
    proc = spawn(
        "workflow",
        "run",
        "chain",
        "--input",
        '{"id": 1}',
        "--unsigned-plan",
        str(plan),
        "--state",
        str(state),
        log=log,
    )
    try:
        wait_for(lambda: started(log, "b") == 1, what="node b to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    run_id = str(only_run(state)["id"])

    status = oneiric("workflow", "status", run_id, "--state", str(state), "--format", "json")
    assert status.returncode == 0
    doc = json.loads(status.stdout)
    assert doc["status"] == "running"
    assert {n["name"]: n["status"] for n in doc["nodes"]} == {
        "a": "succeeded",
        "b": "running",
        "c": "pending",
    }
    with sqlite3.connect(state / "flows.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    resumed = oneiric(
        "workflow",
        "resume",
        run_id,
        "--unsigned-plan",
        str(plan),
        "--state",
        str(state),
        env={"WF_LOG": log},
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "SUCCEEDED" in resumed.stdout
    assert [started(log, n) for n in "abc"] == [1, 2, 1]  # b was in flight: it runs again
    b_calls = [e for e in wftasks.calls(log, "start") if e["name"] == "b"]
    assert b_calls[1]["upstream"] == {"a": {"attempt": 1, "node": "a", "seen": []}}
    assert b_calls[1]["input"] == {"id": 1}

    again = oneiric(
        "workflow", "resume", run_id, "--unsigned-plan", str(plan), "--state", str(state)
    )
    assert again.returncode == 1
    assert "already finished" in again.stderr
    assert "Traceback" not in again.stderr


def test_cancel_from_another_process(tmp_path: Path) -> None:
    _, plan = build_plan(tmp_path, CHAIN)
    log, state = str(tmp_path / "calls.jsonl"), tmp_path / "state"
    proc = spawn(
        "workflow", "run", "chain", "--unsigned-plan", str(plan), "--state", str(state), log=log
    )
    try:
        wait_for(lambda: started(log, "b") == 1, what="node b to start")
        run_id = str(only_run(state)["id"])
        cancel = oneiric("workflow", "cancel", run_id, "--state", str(state))
        assert cancel.returncode == 0, cancel.stderr
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "CANCELLED" in out
    assert f"oneiric workflow resume {run_id}" in err
    assert started(log, "c") == 0
    again = oneiric("workflow", "cancel", run_id, "--state", str(state))
    assert again.returncode == 1
    assert "not running" in again.stderr


def test_run_status_list_and_bad_input(tmp_path: Path) -> None:
    fast = CHAIN.replace("sleep_ms = 2500", "sleep_ms = 1")
    _, plan = build_plan(tmp_path, fast)
    log, state = str(tmp_path / "calls.jsonl"), str(tmp_path / "state")
    common = ["--unsigned-plan", str(plan), "--state", state]

    ran = oneiric("workflow", "run", "chain", *common, "--format", "json", env={"WF_LOG": log})
    assert ran.returncode == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["status"] == "succeeded"
    assert [(n["name"], n["attempts"]) for n in doc["nodes"]] == [("a", 1), ("b", 1), ("c", 1)]

    status = oneiric("workflow", "status", doc["id"], "--state", state)
    assert status.returncode == 0
    assert status.stdout.splitlines()[0].endswith("SUCCEEDED")
    listed = oneiric("workflow", "list", "--state", state)
    assert doc["id"] in listed.stdout
    assert "3/3 nodes" in listed.stdout

    bad = {
        (
            "workflow",
            "run",
            "chian",
            *common,
        ): 'no workflow "chian" in the plan; did you mean "chain"?',
        ("workflow", "run", "chain", "--input", "{oops", *common): "--input is not valid JSON",
        ("workflow", "resume", "nope", *common): 'no workflow run "nope"',
        ("workflow", "resume", doc["id"], *common): "already finished",
        ("workflow", "status", "nope", "--state", state): 'no workflow run "nope"',
    }
    for args, message in bad.items():
        result = oneiric(*args, env={"WF_LOG": log})
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    as_json = oneiric("workflow", "run", "chian", *common, "--format", "json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["ok"] is False

    missing = oneiric("workflow", "run", "chain", "--state", str(tmp_path / "empty"))
    assert missing.returncode == 2
    assert "no running plan" in missing.stderr
    assert (
        len(
            json.loads(oneiric("workflow", "list", "--state", state, "--format", "json").stdout)[
                "runs"
            ]
        )
        == 1
    )
    assert started(log, "a") == 1
