"""`oneiric run` hosts the flow engine: an app's calls emit, start and schedule.

Real `oneiric run` processes with an `--app` (wftasks:calling_app) that calls
the plan's flow actions through their handles; a real `redis-server`, a
separate `oneiric event consume` and a real `oneiric worker` where Redis is
involved; a live swap to a plan with another route.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import wftasks
from servers import free_port
from test_events import handler
from test_postgres_flows import cluster, db  # noqa: F401  (fixtures)
from test_redis_events import _consumer
from test_workflow_cli import spawn
from test_workflows import task
from wfkit import ROOT, build_plan, cli_env, oneiric, wait_for

FLOW = "oneiric.actions.flow"


def stack(topic: str, key: str) -> str:
    return "\n".join(
        [
            handler(key, topic),
            task("c"),
            '  workflow child "x" { node c }',
            f'  action notify "x" {{ impl "{FLOW}:dispatch"\n    config {{ topic = "{topic}" }} }}',
            f'  action kick "x" {{ impl "{FLOW}:start" }}',
            f'  action later "x" {{ impl "{FLOW}:schedule" }}',
        ]
    )


class App:
    """`oneiric run --app wftasks:calling_app` on a plan file; `call` asks it to call an action."""

    def __init__(self, tmp: Path, plan: Path, log: str, *extra: str) -> None:
        self.requests = tmp / "requests"
        self.requests.mkdir()
        self.state = tmp / "state"
        self.count = 0
        self.stderr = tmp / "run.stderr"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oneiric", "run", "--unsigned-plan", str(plan),
             "--state", str(self.state), "--app", "wftasks:calling_app", *extra],
            env=cli_env({"WF_LOG": log, "APP_REQUESTS": str(self.requests)}),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.stderr.open("w"),
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        try:
            found: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return found

    def running(self, digest: str) -> None:
        def ok() -> bool:
            assert self.proc.poll() is None, self.stderr.read_text()
            status = self.status()
            return status.get("state") == "running" and status["plan"]["digest"] == digest

        wait_for(ok, 30, f"running on {digest}")

    def call(self, action: str, payload: Any) -> dict[str, Any]:
        self.count += 1
        asked = self.requests / f"{self.count:04}.tmp"
        asked.write_text(json.dumps({"action": action, "payload": payload}))
        asked.replace(asked.with_suffix(".json"))
        out = asked.with_suffix(".out")
        wait_for(out.exists, 30, f"the app's answer to {action}")
        answer: dict[str, Any] = json.loads(out.read_text())
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.stderr.read_text()


def run_status(state: Path, run: str) -> str:
    shown = oneiric("workflow", "status", run, "--state", str(state), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return str(json.loads(shown.stdout)["status"])


def ends(log: str, name: str) -> list[dict[str, Any]]:
    return [e for e in wftasks.calls(log, "end") if e["name"] == name]


@pytest.mark.slow
def test_an_app_emits_and_starts_in_process_and_follows_a_live_swap(
    tmp_path: Path, wf_log: str
) -> None:
    one, path = build_plan(tmp_path, stack("order.done", "h"))
    app = App(tmp_path, path, wf_log)
    try:
        app.running(one.digest or "")
        emitted = app.call("notify", {"payload": {"n": 1}})["result"]
        assert emitted["matched"] == ["h"], emitted
        assert emitted["ok"], emitted
        assert [(e["payload"], e["pid"]) for e in ends(wf_log, "h")] == [({"n": 1}, app.proc.pid)]
        started = app.call("kick", {"workflow": "child", "input": {"k": 1}})["result"]
        wait_for(lambda: ends(wf_log, "c"), 20, "the started run's node")
        assert {e["pid"] for e in ends(wf_log, "c")} == {app.proc.pid}
        wait_for(lambda: run_status(app.state, started["run"]) == "succeeded", 20, "the run")
        later = app.call("later", {"task": "c", "delay_s": 3600, "id": "nudge-1"})["result"]
        assert (later["id"], later["scheduled"]) == ("nudge-1", True)
        listed = oneiric("task", "list", "--state", str(app.state), "--format", "json")
        assert "nudge-1" in listed.stdout, listed.stderr
        # A live swap to a plan whose route is another topic, another handler.
        two, _ = build_plan(tmp_path / "two", stack("order.paid", "h2"))
        tmp = path.with_suffix(".new")
        tmp.write_bytes(two.to_bytes())
        tmp.replace(path)
        app.running(two.digest or "")
        emitted = app.call("notify", {"payload": {"n": 2}})["result"]
        assert emitted["matched"] == ["h2"], emitted
        assert [e["payload"] for e in ends(wf_log, "h2")] == [{"n": 2}]
        refused = app.call("notify", {"topic": "order.done"})
        assert 'no handler subscribed to topic "order.done"' in refused["error"]
        emitted = app.call("emit", {"topic": "order.paid", "payload": {"n": 3}})["result"]
        assert emitted["matched"] == ["h2"], emitted
        assert [e["payload"] for e in ends(wf_log, "h2")] == [{"n": 2}, {"n": 3}]
    finally:
        app.stop()
    assert len(ends(wf_log, "h")) == 1


@pytest.mark.slow
def test_an_app_emits_to_redis_and_starts_runs_on_a_worker(
    tmp_path: Path, wf_log: str, redis_url: str
) -> None:
    plan, path = build_plan(tmp_path, stack("order.done", "h"))
    state = tmp_path / "state"
    state.mkdir()
    consumer = _consumer(path, redis_url, state, "c", wf_log)
    common = ["--unsigned-plan", str(path), "--state", str(state)]
    worker = spawn("worker", *common, "--tasks", redis_url, "--consumer", "w1", log=wf_log)
    app = App(tmp_path, path, wf_log, "--events", redis_url, "--tasks", redis_url)
    try:
        app.running(plan.digest or "")
        queued = app.call("notify", {"payload": {"n": 1}})["result"]
        assert (queued["stream"], queued["queued"]) == ("oneiric:events:order.done", True)
        wait_for(lambda: ends(wf_log, "h"), 20, "the consumer to handle it")
        assert {e["pid"] for e in ends(wf_log, "h")} == {consumer.pid}  # not in the app's run
        app.call("kick", {"workflow": "child"})
        wait_for(lambda: ends(wf_log, "c"), 30, "the worker to run the node")
        assert {e["pid"] for e in ends(wf_log, "c")} == {worker.pid}
        connections = wait_for(lambda: {"events", "tasks"} <= set(app.status()["connections"])
                               and app.status()["connections"], 10, "the connections")  # fmt: skip
        assert connections["events"]["state"] == connections["tasks"]["state"] == "connected"
        shown = oneiric("status", "--state", str(state)).stdout
        port = redis_url.rsplit(":", 1)[1].split("/")[0]
        assert "runtime connections" in shown, shown
        assert f"tasks  redis://127.0.0.1:{port}/0  connected since" in shown, shown
    finally:
        app.stop()
        for proc in (consumer, worker):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0


@pytest.mark.slow
def test_an_app_starts_runs_recorded_in_postgresql(
    tmp_path: Path,
    wf_log: str,
    db: str,  # noqa: F811
) -> None:
    plan, path = build_plan(tmp_path, stack("order.done", "h"))
    app = App(tmp_path, path, wf_log, "--store", db)
    try:
        app.running(plan.digest or "")
        started = app.call("kick", {"workflow": "child"})["result"]
        wait_for(lambda: ends(wf_log, "c"), 20, "the run's node")
        elsewhere = ["--store", db, "--state", str(tmp_path / "elsewhere"), "--format", "json"]

        def shown() -> str:
            answer = oneiric("workflow", "status", started["run"], *elsewhere)
            assert answer.returncode == 0, answer.stderr
            return str(json.loads(answer.stdout)["status"])

        wait_for(lambda: shown() == "succeeded", 20, "the run, read from PostgreSQL")
        store = wait_for(lambda: app.status()["connections"].get("store"), 10, "the store link")
        assert store["state"] == "connected"
        assert not (app.state / "flows.db").exists()  # the runs are in PostgreSQL only
    finally:
        app.stop()


def test_an_unreachable_broker_or_database_stops_run_at_start(tmp_path: Path) -> None:
    _, path = build_plan(tmp_path, stack("order.done", "h"))
    port = free_port()
    common = ["run", "--unsigned-plan", str(path), "--state", str(tmp_path / "state")]
    for option, url in (
        ("--events", f"redis://127.0.0.1:{port}/0"),
        ("--tasks", f"redis://127.0.0.1:{port}/0"),
        ("--store", f"postgresql://u@127.0.0.1:{port}/db"),
    ):
        answer = oneiric(*common, option, url)
        assert answer.returncode == 2, (option, answer.stderr)
        assert f"127.0.0.1:{port}" in answer.stderr, answer.stderr


def test_a_plan_without_flows_opens_nothing(tmp_path: Path, wf_log: str) -> None:
    _, path = build_plan(tmp_path, task("c"))
    app = App(tmp_path, path, wf_log)
    try:
        wait_for(lambda: app.status().get("state") == "running", 30, "running")
    finally:
        app.stop()
    assert not (app.state / "flows.db").exists()
