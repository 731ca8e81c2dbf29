"""Workflow runs shared in PostgreSQL (a private cluster): schema, leases, takeover, restarts."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import wftasks
from oneiric._flows.host import activated
from oneiric._flows.postgres import (
    SCHEMA_VERSION,
    DatabaseUnavailable,
    PostgresFlowStore,
)
from oneiric._flows.store import LeaseLost
from oneiric._flows.workflows import Workflows
from servers import Server, free_port, postgres_server
from test_workflow_cli import spawn, started
from test_workflows import task
from wfkit import build_plan, oneiric, wait_for

_names = itertools.count()

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


class Cluster:
    """A private PostgreSQL cluster (restartable with its data)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        self.ready()

    def ready(self) -> None:
        """Wait past "the database system is starting up" (the port opens before)."""

        def accepts() -> bool:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        wait_for(accepts, 30, "PostgreSQL to accept connections")

    def restart(self) -> None:
        self.server.stop()
        self.server.start()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    for server in postgres_server():
        yield Cluster(server)


@pytest.fixture
def db(cluster: Cluster) -> str:
    """A fresh database of the cluster: its URL."""
    name = f"t{os.getpid()}_{next(_names)}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.url.rsplit("/", 1)[0] + f"/{name}"


def test_schema_is_created_once_and_versioned(db: str) -> None:
    stores: list[PostgresFlowStore] = []

    def open_store() -> None:
        stores.append(PostgresFlowStore(db))

    threads = [threading.Thread(target=open_store) for _ in range(4)]  # racing runtimes
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stores) == 4
    assert {s.schema_version() for s in stores} == {SCHEMA_VERSION}
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT version FROM oneiric.schema_version").fetchall()
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'oneiric' "
            "ORDER BY 1"
        ).fetchall()
    assert rows == [(1,)]
    assert [t[0] for t in tables] == ["dead_letters", "nodes", "runs", "schema_version"]
    for store in stores:
        store.close()


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(DatabaseUnavailable, match=r"flow store postgresql://.* is unreachable"):
        PostgresFlowStore(url + "?retry=1")
    _, plan = build_plan(tmp_path, CHAIN)
    for args in (
        ("workflow", "list"),
        ("workflow", "run", "chain", "--unsigned-plan", str(plan)),
        ("workflow", "serve", "--unsigned-plan", str(plan)),
    ):
        result = oneiric(*args, "--store", url, "--state", str(tmp_path / "state"))
        assert result.returncode == 2, result.stderr
        assert f"flow store {url} is unreachable" in result.stderr
        assert "Traceback" not in result.stderr
    serve = oneiric("workflow", "serve", "--unsigned-plan", str(plan), "--state", str(tmp_path))
    assert serve.returncode == 2
    assert "needs a shared store" in serve.stderr


@pytest.mark.anyio
async def test_runs_nodes_results_and_dead_letters_round_trip(
    tmp_path: Path, wf_log: str, db: str
) -> None:
    plan, _ = build_plan(tmp_path, CHAIN.replace("sleep_ms = 3000", "sleep_ms = 0"))
    store = PostgresFlowStore(db)
    async with activated(plan, Workflows.task_ids(plan)) as runtime:
        record = await Workflows(plan, runtime, store).run("chain", {"id": 1})
    assert record.status == "succeeded"
    assert [n.status for n in record.nodes.values()] == ["succeeded"] * 3
    assert record.nodes["c"].result == {"node": "c", "attempt": 1, "seen": ["b"]}
    letter = store.add_dead_letter("e1", "t", "h", '{"x": 1}', {"k": "v"}, "boom", 3)
    store.replayed(letter, None, 1)
    assert store.dead_letter(letter).resolved_at is not None  # type: ignore[union-attr]
    store.close()

    # The command line reads the same records from any machine.
    listed = oneiric("workflow", "list", "--store", db, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)["runs"]] == [record.id]
    status = oneiric("workflow", "status", record.id, "--format", "json", env={"ONEIRIC_FLOWS": db})
    assert json.loads(status.stdout)["status"] == "succeeded"
    letters = oneiric("event", "dead-letters", "--all", "--store", db, "--format", "json")
    assert json.loads(letters.stdout)["dead_letters"][0]["error"] == "boom"


def test_a_runtime_that_lost_its_lease_writes_no_checkpoint(db: str) -> None:
    first = PostgresFlowStore(db + "?lease=0.2")
    second = PostgresFlowStore(db + "?lease=30")
    definition = [{"name": "a", "task": "t", "depends_on": []}]
    assert first.create_run("r1", "w", None, definition, "null", "api")
    assert second.adopt(10) == []  # leased
    wait_for(lambda: second.adopt(10) == ["r1"], 5, "the lease to expire")
    assert first.renew(["r1"]) == {"r1"}
    with pytest.raises(LeaseLost):
        first.node_finished("r1", "a", "succeeded", 1, "1", None, 0.0, 1.0)
    second.node_finished("r1", "a", "succeeded", 1, "2", None, 0.0, 1.0)
    run = second.run("r1")
    assert run is not None
    assert run.nodes["a"].result == 2
    first.close()
    second.close()


@pytest.mark.slow
def test_owner_killed_mid_run_another_runtime_takes_over(tmp_path: Path, db: str) -> None:
    _, plan = build_plan(tmp_path, CHAIN)
    log = str(tmp_path / "calls.jsonl")
    url = db + "?lease=2"
    owner = spawn(
        "workflow", "run", "chain", "--input", '{"id": 9}', "--unsigned-plan", str(plan),
        "--store", url, "--state", str(tmp_path / "a"), log=log,
    )  # fmt: skip
    try:
        wait_for(lambda: started(log, "b") == 1, 30, "node b to start")
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
    finally:
        owner.kill()
    killed_at = wftasks.calls(log, "start")[-1]["t"]
    other = spawn(
        "workflow", "serve", "--unsigned-plan", str(plan), "--store", url,
        "--state", str(tmp_path / "b"), log=log,
    )  # fmt: skip
    try:
        store = PostgresFlowStore(url)
        (run,) = store.runs()
        wait_for(lambda: store.run(run.id).status == "succeeded", 40, "the run to finish")  # type: ignore[union-attr]
    finally:
        other.send_signal(signal.SIGTERM)
        assert other.wait(20) == 0, other.stderr.read() if other.stderr else ""
    counts = Counter(e["name"] for e in wftasks.calls(log, "start"))
    assert counts == {"a": 1, "b": 2, "c": 1}  # a was checkpointed: never again
    b_again = [e for e in wftasks.calls(log, "start") if e["name"] == "b"][1]
    assert b_again["pid"] == other.pid
    assert b_again["t"] - killed_at < 2 + 2 + 5  # within the lease (+ a check, + startup)
    final = store.run(run.id)
    assert final is not None
    assert final.nodes["b"].attempts == 1  # the attempt counter restarts for the new owner
    store.close()


@pytest.mark.slow
def test_postgres_restarted_mid_run(tmp_path: Path, cluster: Cluster, db: str) -> None:
    stack = "\n".join(
        [
            *(task(f"n{i}", sleep_ms=400) for i in range(6)),
            '  workflow line "x" {',
            "    " + " -> ".join(f"n{i}" for i in range(6)),
            "  }",
        ]
    )
    _, plan = build_plan(tmp_path, stack)
    log = str(tmp_path / "calls.jsonl")
    proc = spawn(
        "workflow", "run", "line", "--unsigned-plan", str(plan), "--store", db,
        "--state", str(tmp_path / "s"), "--format", "json", log=log,
    )  # fmt: skip
    wait_for(lambda: started(log, "n2") == 1, 30, "node n2 to start")
    cluster.restart()
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded"
    assert Counter(e["name"] for e in wftasks.calls(log, "start")) == {f"n{i}": 1 for i in range(6)}
