"""`oneiric worker`: workflow nodes on worker processes through a real `redis-server`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import wftasks
from servers import free_port
from test_workflow_cli import spawn, started
from test_workflows import diamond, task
from wfkit import build_plan, oneiric, wait_for

CHAIN = "\n".join(
    [
        task("a"),
        task("b", sleep_ms=3000),
        task("c"),
        '  workflow chain "x" {',
        "    a -> b -> c",
        "  }",
    ]
)


def worker(plan: Path, url: str, state: Path, log: str) -> subprocess.Popen[str]:
    proc = spawn(
        "worker", "--unsigned-plan", str(plan), "--tasks", url, "--state", str(state),
        "--consumer", state.name, log=log,
    )  # fmt: skip
    wait_for(lambda: (state / "workers" / f"{state.name}.json").exists(), 30, "the worker")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def test_nodes_run_on_workers_and_are_checkpointed_when_back(
    tmp_path: Path, redis_url: str
) -> None:
    _, plan = build_plan(tmp_path, diamond(b={"sleep_ms": 300}, c={"sleep_ms": 300}))
    log = str(tmp_path / "calls.jsonl")
    workers = [worker(plan, redis_url, tmp_path / f"w{i}", log) for i in range(2)]
    try:
        done = oneiric(
            "workflow", "run", "w", "--input", '{"id": 3}', "--tasks", redis_url,
            "--unsigned-plan", str(plan), "--state", str(tmp_path / "s"), "--format", "json",
            env={"WF_LOG": log},
        )  # fmt: skip
    finally:
        for proc in workers:
            stop(proc)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "succeeded"
    assert {n["name"]: n["result"]["seen"] for n in record["nodes"]} == {
        "a": [],
        "b": ["a"],
        "c": ["a"],
        "d": ["b", "c"],
    }
    calls = wftasks.calls(log, "start")
    assert Counter(e["name"] for e in calls) == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert {e["pid"] for e in calls} <= {p.pid for p in workers}  # none ran in the dispatcher
    assert all(e["input"] == {"id": 3} for e in calls)
    status = json.loads((tmp_path / "w0" / "workers" / "w0.json").read_text())
    assert status["broker"]["connected"]


def test_a_worker_of_another_plan_does_not_take_the_nodes(tmp_path: Path, redis_url: str) -> None:
    _, plan = build_plan(tmp_path / "new", CHAIN.replace("sleep_ms = 3000", "sleep_ms = 10"))
    _, other = build_plan(tmp_path / "old", CHAIN.replace("sleep_ms = 3000", "sleep_ms = 20"))
    log = str(tmp_path / "calls.jsonl")
    old = worker(other, redis_url, tmp_path / "old-worker", log)
    run = spawn(
        "workflow", "run", "chain", "--tasks", redis_url, "--unsigned-plan", str(plan),
        "--state", str(tmp_path / "s"), "--format", "json", log=log,
    )  # fmt: skip
    try:
        with pytest.raises(AssertionError, match="timed out"):
            wait_for(lambda: wftasks.calls(log, "start"), 4, "a node to start")
        new = worker(plan, redis_url, tmp_path / "new-worker", log)
        out, err = run.communicate(timeout=60)
        stop(new)
    finally:
        stop(old)
        run.kill()
    assert run.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded"
    assert {e["pid"] for e in wftasks.calls(log, "start")} == {new.pid}


@pytest.mark.slow
def test_a_worker_killed_mid_task_loses_nothing(tmp_path: Path, redis_url: str) -> None:
    # The killed attempt counts against the retries (a task that kills its worker every
    # time must not loop forever): b may be tried twice.
    stack = CHAIN.replace(
        task("b", sleep_ms=3000), task("b", "wftasks:step", "    retry 2\n", sleep_ms=3000)
    )
    _, plan = build_plan(tmp_path, stack)
    log = str(tmp_path / "calls.jsonl")
    url = redis_url + "?visibility=1"
    first = worker(plan, url, tmp_path / "w1", log)
    run = spawn(
        "workflow", "run", "chain", "--tasks", url, "--unsigned-plan", str(plan),
        "--state", str(tmp_path / "s"), "--format", "json", log=log,
    )  # fmt: skip
    try:
        wait_for(lambda: started(log, "b") == 1, 30, "node b to start on the first worker")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        second = worker(plan, url, tmp_path / "w2", log)
        out, err = run.communicate(timeout=60)
        stop(second)
    finally:
        first.kill()
        run.kill()
    assert run.returncode == 0, err
    record = json.loads(out)
    assert record["status"] == "succeeded"
    nodes = {n["name"]: n for n in record["nodes"]}
    assert nodes["b"]["attempts"] == 2  # the killed attempt counted
    assert nodes["a"]["attempts"] == nodes["c"]["attempts"] == 1
    calls = wftasks.calls(log, "start")
    assert Counter(e["name"] for e in calls) == {"a": 1, "b": 2, "c": 1}
    assert [e["pid"] for e in calls if e["name"] == "b"] == [first.pid, second.pid]
    status = json.loads((tmp_path / "w2" / "workers" / "w2.json").read_text())
    assert status["claimed"] == 1


def test_an_unreachable_broker_stops_a_worker_at_start(tmp_path: Path) -> None:
    _, plan = build_plan(tmp_path, CHAIN)
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (
        ("worker", "--unsigned-plan", str(plan), "--tasks", url),
        ("workflow", "run", "chain", "--unsigned-plan", str(plan), "--tasks", url),
    ):
        result = oneiric(*args, "--state", str(tmp_path / "s"))
        assert result.returncode == 2, result.stderr
        assert f"event broker {url} is unreachable" in result.stderr
        assert "Traceback" not in result.stderr
