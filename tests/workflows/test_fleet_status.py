"""Consumers, workers and their connections in `oneiric status`, /status, the page and
/metrics, through real outages: redis-server and a PostgreSQL cluster killed and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wftasks
from oneiric._lifecycle import snapshots
from servers import Server, free_port, redis_server
from test_postgres_flows import Cluster, cluster, db  # noqa: F401  (fixtures)
from test_redis_events import ends, picky
from test_workflow_cli import spawn
from test_workflows import task
from wfkit import build_plan, oneiric, wait_for

STACK = "\n".join(
    [
        picky("count", "tick", "    fanout exclusive\n"),
        task("a"),
        task("b"),
        '  workflow chain "x" {',
        "    a -> b",
        "  }",
    ]
)


@pytest.fixture
def redis() -> Iterator[Server]:
    yield from redis_server(aof=True)


def status(state: Path) -> tuple[int, dict[str, Any]]:
    answer = oneiric("status", "--state", str(state), "--format", "json")
    return answer.returncode, json.loads(answer.stdout)


def status_text(state: Path) -> str:
    return oneiric("status", "--state", str(state)).stdout


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return str(reply.read().decode())


def states(data: dict[str, Any]) -> tuple[str, str, str]:
    """(consumer's broker, worker's broker, the runtime's own broker connection) states."""
    (consumer,) = data["consumers"]
    (worker,) = data["workers"]
    return (
        consumer["broker"]["state"],
        worker["broker"]["state"],
        # status.json is rewritten every second: the worker's service registers it first
        data["connections"].get("broker", {}).get("state", "not yet registered"),
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.slow
def test_consumer_and_worker_through_a_redis_outage(tmp_path: Path, redis: Server) -> None:
    _, plan = build_plan(tmp_path, STACK)
    log = str(tmp_path / "calls.jsonl")
    url = f"redis://:sekrit@127.0.0.1:{redis.port}/0"
    redis.argv += ["--requirepass", "sekrit"]
    redis.stop()
    redis.start()
    state = tmp_path / "state"
    common = ["--unsigned-plan", str(plan), "--state", str(state)]
    http = free_port()
    consumer = spawn("event", "consume", *common, "--events", url, "--consumer", "c1", log=log)
    worker = spawn(
        "worker", *common, "--tasks", url, "--consumer", "w1", "--http", str(http), log=log
    )
    try:
        wait_for(lambda: status(state)[0] == 0 and len(status(state)[1]["consumers"]) == 1, 30,
                 "the worker's runtime and the consumer")  # fmt: skip
        wait_for(lambda: len(status(state)[1]["workers"]) == 1, 30, "the worker's status")
        wait_for(lambda: states(status(state)[1]) == ("connected",) * 3, 10, "connected")
        code, data = status(state)
        assert code == 0
        assert "sekrit" not in json.dumps(data)  # the password is masked everywhere
        assert data["consumers"][0]["broker"]["url"] == f"redis://:***@127.0.0.1:{redis.port}/0"
        assert data["consumers"][0]["groups"] == ["tick/exclusive"]
        assert data["consumers"][0]["alive"]
        assert data["workers"][0]["alive"]
        text = status_text(state)
        assert "event consumers\n  c1  pid" in text
        assert "workers\n  w1  pid" in text
        assert f"broker redis://:***@127.0.0.1:{redis.port}/0  connected since" in text
        served = json.loads(get(http, "/status"))
        assert [c["name"] for c in served["consumers"]] == ["c1"]
        assert served["connections"]["broker"]["state"] == "connected"
        page = get(http, "/")
        assert "<table id=consumers>" in page
        assert "<table id=workers>" in page
        assert "<script" not in page
        assert "src=" not in page
        assert "<link" not in page
        metrics = get(http, "/metrics")
        assert 'oneiric_process_up{kind="consumer",name="c1"} 1.0' in metrics
        assert (
            f'oneiric_connection_up{{endpoint="redis://:***@127.0.0.1:{redis.port}/0",'
            'kind="consumer",name="c1",role="broker"} 1.0' in metrics
        )

        # Redis dies: both processes keep running and retry with backoff; status says so.
        assert redis.proc is not None
        redis.proc.kill()
        redis.proc.wait(5)
        lost_at = time.monotonic()

        def reconnecting() -> bool:
            return states(status(state)[1]) == ("reconnecting",) * 3

        wait_for(reconnecting, 20, "status to show the outage")
        time.sleep(max(0.0, 6 - (time.monotonic() - lost_at)))
        code, data = status(state)
        assert code == 0  # the runtime (the worker) still runs: its exit code is unchanged
        assert consumer.poll() is None
        assert worker.poll() is None
        for link in (data["consumers"][0]["broker"], data["workers"][0]["broker"]):
            assert link["state"] == "reconnecting"
            assert "Connection" in link["last_error"] or "Error" in link["last_error"]
            # Backoff, not a tight loop: 0.1 s doubling to 5 s is ~10 tries per loop in 6 s.
            assert 1 <= link["attempt"] <= 40, link
            assert link["next_retry_at"] is not None
        text = status_text(state)
        assert "reconnecting (attempt" in text
        assert "next retry in" in text
        assert "last error:" in text
        assert "reconnecting" in get(http, "/")
        metrics = get(http, "/metrics")
        assert 'kind="consumer",name="c1",role="broker"} 0.0' in metrics

        # Redis back on the same port, with its data (AOF): connected again, events flow.
        redis.start()

        def connected() -> bool:
            return states(status(state)[1]) == ("connected",) * 3

        wait_for(connected, 30, "the connections to come back")
        data = status(state)[1]
        assert data["consumers"][0]["broker"]["reconnects"] >= 1
        assert data["workers"][0]["broker"]["reconnects"] >= 1
        for i in range(3):
            emitted = oneiric("event", "emit", "tick", "--payload", str(i), "--events", url,
                              *common)  # fmt: skip
            assert emitted.returncode == 0, emitted.stderr
        wait_for(lambda: len(ends(log, "count")) >= 3, 30, "the events after the restart")
        ran = oneiric("workflow", "run", "chain", "--tasks", url, *common, "--format", "json")
        assert ran.returncode == 0, ran.stderr
        assert {e["pid"] for e in wftasks.calls(log, "end") if e["name"] in ("a", "b")} == {
            worker.pid
        }
        wait_for(lambda: status(state)[1]["workers"][0]["done"] == 2, 10, "the worker's count")
        wait_for(lambda: status(state)[1]["consumers"][0]["broker"]["delivered"] >= 3, 10,
                 "the consumer's count")  # fmt: skip

        # kill -9 of the consumer: shown as not running, not as connected.
        os.kill(consumer.pid, signal.SIGKILL)
        consumer.wait(10)
        code, data = status(state)
        assert code == 0  # a dead consumer does not change the runtime's exit code
        (dead,) = data["consumers"]
        assert (dead["alive"], dead["state"], dead["last_state"]) == (
            False,
            "not running",
            "running",
        )
        assert dead["broker"]["state"] == "unknown"
        assert not dead["broker"]["connected"]
        assert "c1  pid" in status_text(state)
        assert "not running (last seen" in status_text(state)
        metrics = get(http, "/metrics")
        assert 'oneiric_process_up{kind="consumer",name="c1"} 0.0' in metrics
        assert 'kind="consumer",name="c1",role="broker"' not in metrics
    finally:
        stop(consumer)
        stop(worker)
    assert worker.returncode == 0, worker.stderr.read() if worker.stderr else ""
    # A worker stopped by SIGTERM says so ("stopped"), it is not a crash.
    _, data = status(state)
    assert data["workers"][0]["last_state"] == "stopped"


@pytest.mark.slow
def test_workflow_and_task_serve_through_a_postgres_outage(
    tmp_path: Path,
    cluster: Cluster,  # noqa: F811
    db: str,  # noqa: F811
) -> None:
    _, plan = build_plan(tmp_path, STACK)
    log = str(tmp_path / "calls.jsonl")
    state = tmp_path / "state"
    url = db + "?lease=2&retry=12"  # a call gives up (`down`) 12 s into an outage
    common = ["--unsigned-plan", str(plan), "--store", url, "--state", str(state)]
    serve = spawn("workflow", "serve", *common, log=log)
    tasks = spawn("task", "serve", *common, log=log)

    def stores() -> list[str]:
        data = status(state)[1]
        found = data.get("runtimes", []) + data.get("schedulers", [])
        return [str(p["store"]["state"]) for p in found]

    try:
        wait_for(lambda: stores() == ["connected", "connected"], 30, "both processes")
        code, data = status(state)
        assert code == 1  # no runtime (`oneiric run`) in this state directory
        assert data["state"] == "no runtime"
        (runtime,) = data["runtimes"]
        assert runtime["alive"]
        assert runtime["store"]["url"] == db  # the endpoint, without our parameters
        text = status_text(state)
        assert "flow runtimes (workflow serve)" in text
        assert "schedulers (task serve)" in text

        cluster.server.stop()
        wait_for(lambda: stores() == ["reconnecting"] * 2, 40, "status to show the outage")
        data = status(state)[1]
        for p in data["runtimes"] + data["schedulers"]:
            assert p["alive"]
            assert p["store"]["attempt"] >= 1
            assert p["store"]["last_error"]
        assert "store  postgresql://" in status_text(state)
        wait_for(lambda: stores() == ["down"] * 2, 40, "the calls to give up")
        assert serve.poll() is None  # given up calls do not stop the processes
        assert tasks.poll() is None

        cluster.server.start()
        cluster.ready()
        wait_for(lambda: stores() == ["connected"] * 2, 40, "the store to come back")
        assert status(state)[1]["runtimes"][0]["store"]["reconnects"] >= 1
        ran = oneiric("workflow", "run", "chain", *common[:4], "--state", str(tmp_path / "o"),
                      env={"WF_LOG": log})  # fmt: skip
        assert ran.returncode == 0, ran.stderr

        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        (runtime,) = status(state)[1]["runtimes"]
        assert not runtime["alive"]
        assert runtime["state"] == "not running"
        assert runtime["store"]["state"] == "unknown"
    finally:
        stop(serve)
        stop(tasks)
    assert tasks.returncode == 0
    assert status(state)[1]["schedulers"][0]["last_state"] == "stopped"


def test_a_stale_file_of_a_dead_consumer_is_not_running(tmp_path: Path) -> None:
    """Written files, no servers: a dead pid, a reused pid and a stale heartbeat are not
    running; a fresh one of a live process is; the runtime's exit code ignores them."""
    state = tmp_path / "state"
    me = os.getpid()
    link = {"role": "broker", "url": "redis://h:1/0", "state": "connected", "connected": True,
            "since": time.time(), "attempt": 0, "next_retry_at": None, "last_error": None,
            "last_error_at": None, "reconnects": 0, "delivered": 4}  # fmt: skip
    live = {"pid": me, "pid_start": snapshots.process_start(me), "state": "running",
            "written_at": time.time(), "consumer": "live", "broker": link}  # fmt: skip
    dead = subprocess.Popen(["true"])
    dead.wait()
    zombie = subprocess.Popen(["true"])  # exited, not reaped yet: its pid still answers
    wait_for(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] == "Z", 10,
             "the zombie")  # fmt: skip
    files = {
        "live": live,
        "gone": {**live, "consumer": "gone", "pid": dead.pid, "pid_start": None},
        "reused": {**live, "consumer": "reused", "pid_start": "1"},
        "zombie": {**live, "consumer": "zombie", "pid": zombie.pid, "pid_start": None},
        "stale": {**live, "consumer": "stale", "written_at": time.time() - 60},
    }
    (state / "consumers").mkdir(parents=True)
    for name, document in files.items():
        snapshots.write_json(state / "consumers" / f"{name}.json", document)
    (state / "consumers" / "junk.json").write_text("[]")
    code, data = status(state)
    assert code == 1
    assert data["state"] == "no runtime"
    alive = {c["name"]: (c["alive"], c["state"], c["broker"]["state"]) for c in data["consumers"]}
    assert alive == {
        "gone": (False, "not running", "unknown"),
        "live": (True, "running", "connected"),
        "reused": (False, "not running", "unknown"),
        "stale": (False, "not running", "unknown"),
        "zombie": (False, "not running", "unknown"),
    }
    text = status_text(state)
    assert "  live  pid" in text
    assert "delivered 4" in text
    assert text.count("not running (last seen") == 4
    zombie.wait()
