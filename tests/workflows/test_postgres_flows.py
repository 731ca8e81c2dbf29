"""Workflow runs shared in PostgreSQL (a private cluster): schema, leases, takeover, restarts."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import psycopg
import pytest
import wftasks
from oneiric._flows.host import activated
from oneiric._flows.postgres import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseUnavailable,
    PostgresFlowStore,
)
from oneiric._flows.schedule import Scheduler
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
    assert rows == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert [t[0] for t in tables] == [
        "dead_letters",
        "nodes",
        "runs",
        "scheduled",
        "schema_version",
    ]
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


# -- scheduled tasks (task.schedule) on the shared store -----------------------------------
SCHEDULED = "\n".join([task("c", sleep_ms=200), task("slow", sleep_ms=3000)])


def test_a_version_1_schema_migrates_to_scheduled_tasks_keeping_its_runs(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE SCHEMA oneiric")
        conn.execute("SET LOCAL search_path = oneiric")
        conn.execute(MIGRATIONS[0])
        conn.execute("CREATE TABLE schema_version (version INTEGER, migrated_at DOUBLE PRECISION)")
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        conn.execute(
            "INSERT INTO runs (id, workflow, definition, input, status, trigger, created_at, "
            "updated_at) VALUES ('old', 'w', '[]', 'null', 'succeeded', 'api', 1, 1)"
        )
    store = PostgresFlowStore(db)
    assert store.schema_version() == SCHEMA_VERSION == 2
    assert store.run("old") is not None  # the records of version 1 are kept
    assert store.schedule("s1", "c", '{"n": 1}', 0.0)
    assert not store.schedule("s1", "c", "null", 0.0)  # an existing id schedules nothing new
    (due,) = store.claim_due(time.time(), 10)
    assert (due.id, due.input, due.status, due.attempts) == ("s1", {"n": 1}, "running", 1)
    store.close()


def test_due_tasks_are_claimed_once_and_an_expired_claim_is_taken_over(db: str) -> None:
    first = PostgresFlowStore(db + "?lease=0.5")
    second = PostgresFlowStore(db + "?lease=30")
    now = time.time()
    for i in range(50):
        assert first.schedule(f"t{i:02}", "c", json.dumps({"n": i}), now - 1)
    assert first.schedule("later", "c", "null", now + 3600)

    claims: dict[int, list[str]] = {}

    def claim(index: int, store: PostgresFlowStore) -> None:
        mine = claims.setdefault(index, [])
        while got := [s.id for s in store.claim_due(time.time(), 4)]:
            mine.extend(got)

    stores = [second, PostgresFlowStore(db + "?lease=30"), PostgresFlowStore(db + "?lease=30")]
    threads = [threading.Thread(target=claim, args=pair) for pair in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [i for ids in claims.values() for i in ids]
    assert sorted(claimed) == [f"t{i:02}" for i in range(50)]  # each once; "later" not due
    assert second.renew_scheduled(claimed) == set(claimed) - set(claims[0])  # others' claims
    for extra in stores[1:]:
        extra.close()

    # A claimer that stops renewing loses the task to another, which records it once.
    assert first.schedule("k", "c", "null", time.time() - 1)
    (mine,) = first.claim_due(time.time(), 10)
    assert mine.id == "k"
    assert second.claim_due(time.time(), 10) == []  # leased
    wait_for(lambda: [s.id for s in second.claim_due(time.time(), 10)] == ["k"], 5, "the lease")
    assert first.renew_scheduled(["k"]) == {"k"}
    assert not first.scheduled_finished("k", "succeeded", "1", None)  # not its claim any more
    assert second.scheduled_finished("k", "succeeded", "2", None)
    time.sleep(0.6)  # past first's lease: a recorded outcome is never claimed again
    assert first.claim_due(time.time(), 100) == []
    (done,) = [s for s in second.scheduled() if s.id == "k"]
    assert (done.status, done.result, done.attempts) == ("succeeded", 2, 2)
    first.close()
    second.close()


@pytest.mark.anyio
async def test_the_scheduler_stops_a_task_it_lost_and_gives_back_those_it_cuts_short(
    tmp_path: Path, wf_log: str, db: str
) -> None:
    plan, _ = build_plan(tmp_path, SCHEDULED)
    store = PostgresFlowStore(db + "?lease=0.6")
    other = PostgresFlowStore(db + "?lease=30")

    def row(task_id: str) -> tuple[str, str | None]:
        with psycopg.connect(db) as conn:
            found = conn.execute(
                "SELECT status, owner FROM oneiric.scheduled WHERE id = %s", (task_id,)
            ).fetchone()
        assert found is not None
        return found[0], found[1]

    async def until(check: Callable[[], bool]) -> None:
        with anyio.fail_after(10):
            while not check():
                await anyio.sleep(0.05)

    async with (
        activated(plan, Scheduler.task_ids(plan)) as runtime,
        anyio.create_task_group() as group,
    ):
        group.start_soon(Scheduler(plan, runtime, store).serve, 0.05)
        # Taken over while it runs here (as if this runtime had stalled past its lease):
        # the next renewal finds it lost; it is stopped here and nothing is recorded.
        assert store.schedule("lost", "slow", '{"n": 1}', time.time())
        await until(lambda: started(wf_log, "slow") == 1)
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(
                "UPDATE oneiric.scheduled SET owner = 'another', "
                "lease_until = extract(epoch from now()) + 60 WHERE id = 'lost'"
            )
        await anyio.sleep(1.0)  # past a renewal (every 0.2 s)
        assert row("lost") == ("running", "another")
        # Cut short by the scheduler's end: given back at once, not after the lease.
        assert store.schedule("cut", "slow", '{"n": 2}', time.time())
        await until(lambda: started(wf_log, "slow") == 2)
        group.cancel_scope.cancel()
    assert wftasks.calls(wf_log, "end") == []  # neither ran to its end here
    (again,) = other.claim_due(time.time(), 10)  # "lost" is leased by "another": not due
    assert (again.id, again.attempts) == ("cut", 2)
    store.close()
    other.close()


def task_serve(plan: Path, url: str, state: Path, log: str) -> subprocess.Popen[str]:
    return spawn(
        "task", "serve", "--poll", "100ms", "--unsigned-plan", str(plan), "--store", url,
        "--state", str(state), log=log,
    )  # fmt: skip


def wait_connected(db: str, count: int) -> None:
    """Until `count` other sessions are connected to `db` (runtimes past their start)."""

    def sessions() -> int:
        with psycopg.connect(db) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid != pg_backend_pid()"
            ).fetchone()
        return int(row[0]) if row else 0

    wait_for(lambda: sessions() >= count, 30, f"{count} runtimes to connect")


def stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""


def listed_tasks(db: str) -> dict[str, dict[str, object]]:
    result = oneiric("task", "list", "--store", db, "--format", "json")
    assert result.returncode == 0, result.stderr
    return {t["id"]: t for t in json.loads(result.stdout)["scheduled"]}


@pytest.mark.slow
def test_two_runtimes_share_the_schedule_and_run_each_task_once(tmp_path: Path, db: str) -> None:
    _, plan = build_plan(tmp_path, SCHEDULED)
    log = str(tmp_path / "calls.jsonl")
    runtimes = [task_serve(plan, db, tmp_path / f"s{i}", log) for i in range(2)]
    try:
        wait_connected(db, 2)
        # The application's way (the task.schedule action, here from the command line) ...
        first = oneiric(
            "action", "invoke", "task.schedule", "--format", "json", "--unsigned-plan", str(plan),
            "--store", db, "--state", str(tmp_path / "app"),
            "--payload", '{"task": "c", "delay_s": 1, "input": {"n": 0}, "id": "t00"}',
            env={"WF_LOG": log},
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["result"]["scheduled"] is True
        # ... and 49 more straight into the store, falling due one every 40 ms.
        store = PostgresFlowStore(db)
        start = time.time() + 1
        for i in range(1, 50):
            assert store.schedule(f"t{i:02}", "c", json.dumps({"n": i}), start + i * 0.04)
        store.close()
        wait_for(lambda: len(wftasks.calls(log, "end")) >= 50, 60, "the 50 tasks to run")
        time.sleep(1.0)  # more polls by both: nothing runs again
        assert all(proc.poll() is None for proc in runtimes)
    finally:
        stop(*runtimes)
    starts = wftasks.calls(log, "start")
    assert sorted(e["input"]["n"] for e in starts) == list(range(50))  # each exactly once
    by_pid = Counter(e["pid"] for e in starts)
    assert set(by_pid) == {proc.pid for proc in runtimes}, by_pid  # both claimed tasks
    rows = listed_tasks(db)
    assert len(rows) == 50
    assert {(r["status"], r["attempts"]) for r in rows.values()} == {("succeeded", 1)}


@pytest.mark.slow
def test_a_claimer_killed_mid_task_its_task_runs_again_after_the_lease(
    tmp_path: Path, db: str
) -> None:
    _, plan = build_plan(tmp_path, SCHEDULED)
    log, url = str(tmp_path / "calls.jsonl"), db + "?lease=2"
    runtimes = [task_serve(plan, url, tmp_path / f"s{i}", log) for i in range(2)]
    try:
        wait_connected(db, 2)
        store = PostgresFlowStore(url)
        assert store.schedule("k", "slow", '{"n": 1}', time.time())
        wait_for(lambda: started(log, "slow") == 1, 30, "the task to start")
        (claimer,) = [p for p in runtimes if p.pid == wftasks.calls(log, "start")[0]["pid"]]
        (other,) = [p for p in runtimes if p is not claimer]
        os.kill(claimer.pid, signal.SIGKILL)
        killed_at = time.time()
        claimer.wait(10)
        wait_for(lambda: listed_tasks(db)["k"]["status"] == "succeeded", 40, "the task to end")
        time.sleep(1.0)  # more polls: a recorded success never runs again
        assert other.poll() is None
    finally:
        stop(*(p for p in runtimes if p.poll() is None))
    first, again = wftasks.calls(log, "start")
    assert (first["pid"], again["pid"]) == (claimer.pid, other.pid)
    assert again["t"] - killed_at < 2 + 1 + 2  # within the lease (+ a renewal, + polls)
    (end,) = wftasks.calls(log, "end")
    assert end["pid"] == other.pid
    row = listed_tasks(db)["k"]
    assert (row["status"], row["attempts"], row["result"]) == (
        "succeeded",
        2,
        {"node": "slow", "attempt": 2, "seen": []},
    )
    store.close()


@pytest.mark.slow
def test_postgres_restarted_while_tasks_are_due(tmp_path: Path, cluster: Cluster, db: str) -> None:
    _, plan = build_plan(tmp_path, SCHEDULED)
    log = str(tmp_path / "calls.jsonl")
    runtimes = [task_serve(plan, db, tmp_path / f"s{i}", log) for i in range(2)]
    try:
        wait_connected(db, 2)
        store = PostgresFlowStore(db)
        due = time.time() + 1.5
        for i in range(10):
            assert store.schedule(f"d{i}", "c", json.dumps({"n": i}), due)
        store.close()
        cluster.server.stop()
        time.sleep(max(0.0, due - time.time()) + 2)  # due while the database is down
        assert wftasks.calls(log, "start") == []
        cluster.server.start()
        cluster.ready()
        wait_for(lambda: len(wftasks.calls(log, "end")) >= 10, 90, "the due tasks to run")
        time.sleep(1.0)
        assert all(proc.poll() is None for proc in runtimes)  # they waited, never crashed
    finally:
        stop(*runtimes)
    assert sorted(e["input"]["n"] for e in wftasks.calls(log, "start")) == list(range(10))
    assert {r["status"] for r in listed_tasks(db).values()} == {"succeeded"}
