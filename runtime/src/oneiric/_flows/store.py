"""Durable records of workflow runs and event dead letters: STATE/flows.db (SQLite, WAL).

Every change is one SQLite transaction, so a reader, or a process that
restarts after SIGKILL, sees a run as it was before or after a checkpoint,
never between.  `synchronous=NORMAL` in WAL mode survives the death of the
process at any instant; after a power loss the last few checkpoints may be
lost, never corrupted (a lost checkpoint only means a node runs again).
Standard library only: `workflow status|list` and `event dead-letters` must
start fast.  The schema is documented in docs/workflows.md.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneiric import _sqlite
from oneiric._lifecycle.snapshots import pid_alive

FILENAME = "flows.db"
RUN_STATES = ("running", "succeeded", "failed", "cancelled")
NODE_STATES = ("pending", "running", "succeeded", "failed", "skipped", "cancelled")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    plan_digest TEXT,
    definition TEXT NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    error TEXT,
    trigger TEXT NOT NULL,
    owner_pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (created_at);
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    duration_ms REAL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    handler TEXT NOT NULL,
    payload TEXT NOT NULL,
    headers TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    replays INTEGER NOT NULL DEFAULT 0,
    resolved_at REAL
);
CREATE TABLE IF NOT EXISTS scheduled (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    input TEXT NOT NULL,
    due_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    owner_pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS scheduled_by_due ON scheduled (status, due_at);
"""


class StoreError(Exception):
    """A record is missing or in a state that forbids the operation (exit 1 at the CLI)."""


class StoreUnavailable(Exception):
    """A shared store could not be reached, even after its retries (exit 2 at the CLI)."""


class LeaseLost(Exception):
    """This runtime no longer owns the run (its lease expired and another runtime took it)."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    task: str
    status: str
    attempts: int
    result: Any
    error: str | None
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "status": self.status,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    workflow: str
    plan_digest: str | None
    definition: list[dict[str, Any]]
    input: Any
    status: str
    error: str | None
    trigger: str
    owner_pid: int | None
    cancel_requested: bool
    created_at: float
    updated_at: float
    finished_at: float | None
    nodes: dict[str, NodeRecord]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "plan_digest": self.plan_digest,
            "input": self.input,
            "status": self.status,
            "error": self.error,
            "trigger": self.trigger,
            "owner_pid": self.owner_pid,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "nodes": [n.as_json() for n in self.nodes.values()],
        }


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A task to run at `due_at` (`task.schedule`), and what became of it."""

    id: str
    task: str
    input: Any
    due_at: float
    status: str
    attempts: int
    result: Any
    error: str | None
    created_at: float
    finished_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "input": self.input,
            "due_at": self.due_at,
            "status": self.status,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int | str  # str: a Redis Streams entry id (see redis_events)
    event_id: str
    topic: str
    handler: str
    payload: Any
    headers: dict[str, str]
    error: str
    attempts: int
    created_at: float
    replays: int
    resolved_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_id": self.event_id,
            "topic": self.topic,
            "handler": self.handler,
            "payload": self.payload,
            "headers": self.headers,
            "error": self.error,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "replays": self.replays,
            "resolved_at": self.resolved_at,
        }


class FlowStore:
    """One connection to STATE/flows.db; use from one thread (the event loop's) at a time.

    `postgres.PostgresFlowStore` is the same records in PostgreSQL, shared by
    several runtimes: `remote` (its calls may wait on the network: run them in
    a worker thread) and `lease_s` (runs are owned through leases).
    """

    remote = False
    lease_s: float | None = None

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILENAME
        self.location = str(self.path)
        self._db = _sqlite.connect(self.path, timeout_s=10.0, threads=True)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (never half-written)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- runs --------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        workflow: str,
        plan_digest: str | None,
        definition: list[dict[str, Any]],
        input_json: str,
        trigger: str,
    ) -> bool:
        """Record a new run and all its nodes as pending; False if `run_id` already exists."""
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                return False
            db.execute(
                "INSERT INTO runs (id, workflow, plan_digest, definition, input, status, trigger,"
                " owner_pid, created_at, updated_at) VALUES (?,?,?,?,?,'running',?,?,?,?)",
                (
                    run_id,
                    workflow,
                    plan_digest,
                    json.dumps(definition, sort_keys=True),
                    input_json,
                    trigger,
                    os.getpid(),
                    now,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO nodes (run_id, name, task, status) VALUES (?, ?, ?, 'pending')",
                [(run_id, node["name"], node["task"]) for node in definition],
            )
        return True

    def claim_for_resume(self, run_id: str) -> RunRecord:
        """Take over a stopped run: reset its unfinished nodes to pending, mark it running.

        Refused (StoreError) for an unknown run, a succeeded one, or one whose
        owner process is still alive.
        """
        with self._transaction() as db:
            run = self._run(db, run_id)
            if run is None:
                raise StoreError(f'no workflow run "{run_id}"')
            if run.status == "succeeded":
                raise StoreError(f"run {run_id} already finished (succeeded); nothing to resume")
            owner = run.owner_pid
            if (
                run.status == "running"
                and owner is not None
                and owner != os.getpid()
                and pid_alive(owner)
            ):
                raise StoreError(f"run {run_id} is still running in process {owner}")
            db.execute(
                "UPDATE nodes SET status = 'pending', error = NULL "
                "WHERE run_id = ? AND status != 'succeeded'",
                (run_id,),
            )
            db.execute(
                "UPDATE runs SET status = 'running', error = NULL, owner_pid = ?, "
                "cancel_requested = 0, updated_at = ?, finished_at = NULL WHERE id = ?",
                (os.getpid(), time.time(), run_id),
            )
            claimed = self._run(db, run_id)
        assert claimed is not None
        return claimed

    def node_started(self, run_id: str, name: str, attempt: int, now: float) -> None:
        self._db.execute(
            "UPDATE nodes SET status = 'running', attempts = ?, "
            "started_at = coalesce(started_at, ?) WHERE run_id = ? AND name = ?",
            (attempt, now, run_id, name),
        )

    def node_finished(
        self,
        run_id: str,
        name: str,
        status: str,
        attempts: int,
        result_json: str | None,
        error: str | None,
        started_at: float,
        now: float,
    ) -> None:
        """The checkpoint after a node: one statement, atomic on its own."""
        self._db.execute(
            "UPDATE nodes SET status = ?, attempts = ?, result = ?, error = ?, "
            "finished_at = ?, duration_ms = ? WHERE run_id = ? AND name = ?",
            (status, attempts, result_json, error, now, (now - started_at) * 1000, run_id, name),
        )

    def finish_run(
        self, run_id: str, status: str, error: str | None, node_updates: Iterable[tuple[str, str]]
    ) -> None:
        """Final state of a run, with the nodes that end with it (skipped, cancelled)."""
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "UPDATE nodes SET status = ? WHERE run_id = ? AND name = ?",
                [(state, run_id, name) for name, state in node_updates],
            )
            db.execute(
                "UPDATE runs SET status = ?, error = ?, updated_at = ?, finished_at = ? "
                "WHERE id = ?",
                (status, error, now, now, run_id),
            )

    def request_cancel(self, run_id: str) -> RunRecord:
        with self._transaction() as db:
            run = self._run(db, run_id)
            if run is None:
                raise StoreError(f'no workflow run "{run_id}"')
            if run.status != "running":
                raise StoreError(f"run {run_id} is not running (it {run.status})")
            db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
        return run

    def cancel_requested(self, run_id: str) -> bool:
        row = self._db.execute(
            "SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        return bool(row and row[0])

    def renew(self, run_ids: Iterable[str]) -> set[str]:
        """Extend this runtime's leases on `run_ids`; the runs it lost (none: no leases here)."""
        return set()

    def release(self, run_ids: Iterable[str]) -> None:
        """End this runtime's leases on `run_ids` now (no leases here)."""

    def adopt(self, limit: int) -> list[str]:
        """Take over runs whose owner's lease expired (none here: `resume` after a restart)."""
        return []

    def data_version(self) -> int:
        """Changes when another connection commits (cheap to poll)."""
        version: int = self._db.execute("PRAGMA data_version").fetchone()[0]
        return version

    def run(self, run_id: str) -> RunRecord | None:
        return self._run(self._db, run_id)

    def runs(self, limit: int = 50, workflow: str | None = None) -> list[RunRecord]:
        """The most recent runs, newest first."""
        where, args = ("WHERE workflow = ?", (workflow,)) if workflow else ("", ())
        ids = self._db.execute(
            f"SELECT id FROM runs {where} ORDER BY created_at DESC, id LIMIT ?", (*args, limit)
        ).fetchall()
        found = [self._run(self._db, row[0]) for row in ids]
        return [run for run in found if run is not None]

    @staticmethod
    def _run(db: sqlite3.Connection, run_id: str) -> RunRecord | None:
        row = db.execute(
            "SELECT id, workflow, plan_digest, definition, input, status, error, trigger, "
            "owner_pid, cancel_requested, created_at, updated_at, finished_at "
            "FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        definition = json.loads(row[3])
        order = {node["name"]: index for index, node in enumerate(definition)}
        node_rows = db.execute(
            "SELECT name, task, status, attempts, result, error, started_at, finished_at, "
            "duration_ms FROM nodes WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        node_rows.sort(key=lambda r: order.get(r[0], len(order)))
        nodes = {
            r[0]: NodeRecord(
                r[0], r[1], r[2], r[3], None if r[4] is None else json.loads(r[4]), *r[5:]
            )
            for r in node_rows
        }
        return RunRecord(
            row[0],
            row[1],
            row[2],
            definition,
            json.loads(row[4]),
            row[5],
            row[6],
            row[7],
            row[8],
            bool(row[9]),
            row[10],
            row[11],
            row[12],
            nodes,
        )

    # -- scheduled tasks (task.schedule) ---------------------------------------------------
    def schedule(self, task_id: str, task: str, input_json: str, due_at: float) -> bool:
        """Record a task to run at `due_at`; False if `task_id` is already scheduled."""
        cursor = self._db.execute(
            "INSERT INTO scheduled (id, task, input, due_at, status, created_at) "
            "VALUES (?, ?, ?, ?, 'pending', ?) ON CONFLICT (id) DO NOTHING",
            (task_id, task, input_json, due_at, time.time()),
        )
        return bool(cursor.rowcount == 1)

    def claim_due(self, now: float, limit: int) -> list[Scheduled]:
        """Mark up to `limit` due tasks as running in this process, in one transaction.

        A task left running by a process that died is due again (at-least-once
        for a task that was running; a finished one never runs again).
        """
        me = os.getpid()
        with self._transaction() as db:
            stale = db.execute(
                "SELECT id, owner_pid FROM scheduled WHERE status = 'running'"
            ).fetchall()
            for task_id, owner in stale:
                if owner != me and (owner is None or not pid_alive(owner)):
                    db.execute("UPDATE scheduled SET status = 'pending' WHERE id = ?", (task_id,))
            rows = db.execute(
                "UPDATE scheduled SET status = 'running', owner_pid = ?, attempts = attempts + 1 "
                "WHERE id IN (SELECT id FROM scheduled WHERE status = 'pending' AND due_at <= ? "
                f"ORDER BY due_at, id LIMIT ?) RETURNING {SCHEDULED_COLUMNS}",
                (me, now, limit),
            ).fetchall()
        return sorted(map(scheduled_row, rows), key=lambda s: (s.due_at, s.id))

    def renew_scheduled(self, task_ids: Iterable[str]) -> set[str]:
        """Extend the claims on running tasks; those lost (none: no leases here, see claim_due)."""
        return set()

    def scheduled_finished(
        self, task_id: str, status: str, result_json: str | None, error: str | None
    ) -> bool:
        """Record a claimed task's outcome; False if this process no longer holds its claim."""
        cursor = self._db.execute(
            "UPDATE scheduled SET status = ?, result = ?, error = ?, finished_at = ? "
            "WHERE id = ? AND status = 'running' AND owner_pid = ?",
            (status, result_json, error, time.time(), task_id, os.getpid()),
        )
        return bool(cursor.rowcount == 1)

    def release_scheduled(self, task_ids: Iterable[str]) -> None:
        """Give back claimed tasks cut short here (due again at once, for any process)."""
        self._db.executemany(
            "UPDATE scheduled SET status = 'pending' "
            "WHERE id = ? AND status = 'running' AND owner_pid = ?",
            [(task_id, os.getpid()) for task_id in task_ids],
        )

    def scheduled(self, limit: int = 100) -> list[Scheduled]:
        """Scheduled tasks, soonest due first."""
        rows = self._db.execute(
            f"SELECT {SCHEDULED_COLUMNS} FROM scheduled ORDER BY due_at, id LIMIT ?", (limit,)
        ).fetchall()
        return [scheduled_row(row) for row in rows]

    # -- dead letters --------------------------------------------------------------------
    def add_dead_letter(
        self,
        event_id: str,
        topic: str,
        handler: str,
        payload_json: str,
        headers: dict[str, str],
        error: str,
        attempts: int,
    ) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO dead_letters (event_id, topic, handler, payload, headers, error, "
                "attempts, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    event_id,
                    topic,
                    handler,
                    payload_json,
                    json.dumps(headers, sort_keys=True),
                    error,
                    attempts,
                    time.time(),
                ),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def dead_letters(self, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        where = "" if include_resolved else "WHERE resolved_at IS NULL"
        rows = self._db.execute(
            "SELECT id, event_id, topic, handler, payload, headers, error, attempts, created_at, "
            f"replays, resolved_at FROM dead_letters {where} ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [_dead_letter(row) for row in rows]

    def dead_letter(self, letter_id: int) -> DeadLetter | None:
        row = self._db.execute(
            "SELECT id, event_id, topic, handler, payload, headers, error, attempts, created_at, "
            "replays, resolved_at FROM dead_letters WHERE id = ?",
            (letter_id,),
        ).fetchone()
        return None if row is None else _dead_letter(row)

    def replayed(self, letter_id: int, error: str | None, attempts: int) -> None:
        """Record a replay: resolved when `error` is None, otherwise the new error."""
        with self._transaction() as db:
            if error is None:
                db.execute(
                    "UPDATE dead_letters SET replays = replays + 1, resolved_at = ? WHERE id = ?",
                    (time.time(), letter_id),
                )
            else:
                db.execute(
                    "UPDATE dead_letters SET replays = replays + 1, error = ?, "
                    "attempts = attempts + ? WHERE id = ?",
                    (error, attempts, letter_id),
                )


SCHEDULED_COLUMNS = (
    "id, task, input, due_at, status, attempts, result, error, created_at, finished_at"
)


def scheduled_row(row: tuple[Any, ...]) -> Scheduled:
    """A `Scheduled` from a row of `SCHEDULED_COLUMNS` (SQLite or PostgreSQL)."""
    return Scheduled(
        row[0],
        row[1],
        json.loads(row[2]),
        row[3],
        row[4],
        row[5],
        None if row[6] is None else json.loads(row[6]),
        row[7],
        row[8],
        row[9],
    )


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        row[0],
        row[1],
        row[2],
        row[3],
        json.loads(row[4]),
        json.loads(row[5]),
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
    )
