"""Workflow runs and dead letters in PostgreSQL, shared by several runtimes.

The records are those of `FlowStore` (same columns, same JSON), in the schema
`oneiric` of the database named by a `postgresql://` URL; psycopg 3 with a
connection pool, an optional extra (`oneiric-runtime[postgres]`) imported
only when such a URL is used.

A run is owned through a lease: `owner` (this runtime's id) and
`lease_until` (database clock, so the runtimes' clocks do not matter).  The
owner renews its leases every third of the lease time; a runtime whose owner
died (`kill -9`, a lost machine) stops renewing, and once the lease has
expired another runtime `adopt`s the run (`FOR UPDATE SKIP LOCKED`: one
taker), resets the nodes that had not succeeded to pending and runs them.
Checkpoints are written only while the writer owns the run (`LeaseLost`
otherwise), so a runtime that lost its lease never overwrites the new
owner's records, and a succeeded node is never run again.  Scheduled tasks
(`task.schedule`, schema version 2) are claimed the same way: a claim is a
lease renewed by the claimer, taken by one other runtime once it expired,
and only the claim's holder records the outcome.

The schema is created and migrated by the runtime: `oneiric.schema_version`
holds the version; each migration runs once, in a transaction, under an
advisory lock (several runtimes may start at once).

Lost connections are retried with backoff (0.1 s doubling to 5 s) for up to
`retry_s` (default 60 s) per call, and tracked by `link` (`link.Link`).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

from oneiric._flows.link import RETRY_MIN_S, Link, backoff, safe_url
from oneiric._flows.store import (
    SCHEDULED_COLUMNS,
    FlowStore,
    LeaseLost,
    RunRecord,
    Scheduled,
    StoreError,
    StoreUnavailable,
    scheduled_row,
)

T = TypeVar("T")
DEFAULT_LEASE_S = 15.0
DEFAULT_RETRY_S = 60.0
LOCK_ID = 0x0E1E1C  # pg_advisory_xact_lock key of the migrations
NOW = "extract(epoch from clock_timestamp())"

MIGRATIONS: list[str] = [
    # 1: the records of flows.db, plus ownership through a lease.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        plan_digest TEXT,
        definition TEXT NOT NULL,
        input TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
        error TEXT,
        trigger TEXT NOT NULL,
        owner_pid INTEGER,
        owner TEXT,
        lease_until DOUBLE PRECISION,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION
    );
    CREATE INDEX runs_by_time ON runs (created_at);
    CREATE INDEX runs_by_lease ON runs (lease_until) WHERE status = 'running';
    CREATE TABLE nodes (
        run_id TEXT NOT NULL REFERENCES runs (id),
        name TEXT NOT NULL,
        task TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN
            ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        error TEXT,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        duration_ms DOUBLE PRECISION,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE dead_letters (
        id BIGSERIAL PRIMARY KEY,
        event_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        handler TEXT NOT NULL,
        payload TEXT NOT NULL,
        headers TEXT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        replays INTEGER NOT NULL DEFAULT 0,
        resolved_at DOUBLE PRECISION
    );
    """,
    # 2: scheduled tasks (`task.schedule`), claimed through a lease like runs.
    """
    CREATE TABLE scheduled (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        input TEXT NOT NULL,
        due_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
        owner_pid INTEGER,
        owner TEXT,
        lease_until DOUBLE PRECISION,
        attempts INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION
    );
    CREATE INDEX scheduled_by_due ON scheduled (due_at) WHERE status = 'pending';
    CREATE INDEX scheduled_by_lease ON scheduled (lease_until) WHERE status = 'running';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class DatabaseUnavailable(StoreUnavailable):
    """The database cannot be reached or refused us (exit 2 at the CLI)."""


class _Rows:
    """What `FlowStore`'s SQL expects of a cursor, rows already fetched."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class _Conn:
    """One psycopg connection speaking FlowStore's SQL (`?` placeholders)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Iterable[Any] = ()) -> _Rows:
        cursor = self.conn.execute(sql.replace("?", "%s"), tuple(args))
        rows = cursor.fetchall() if cursor.description else []
        return _Rows(rows, cursor.rowcount)

    def executemany(self, sql: str, args: Iterable[Iterable[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), [tuple(a) for a in args])


class _Pooled:
    """`self._db` of the base class: each statement on a pooled connection, autocommitted."""

    def __init__(self, store: PostgresFlowStore) -> None:
        self.store = store

    def execute(self, sql: str, args: Iterable[Any] = ()) -> _Rows:
        with self.store._pool.connection() as conn:
            return _Conn(conn).execute(sql, args)


def _settings(url: str) -> tuple[str, float, float]:
    """(connection URL, lease seconds, retry seconds) from `postgresql://...?lease=S&retry=S`."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    lease = query.pop("lease", str(DEFAULT_LEASE_S))
    retry = query.pop("retry", str(DEFAULT_RETRY_S))
    rest = "&".join(f"{k}={v}" for k, v in query.items())
    try:
        return urlunsplit(parts._replace(query=rest)), float(lease), float(retry)
    except ValueError:
        raise DatabaseUnavailable(
            f"flow store {safe_url(url)}: lease and retry must be seconds"
        ) from None


def is_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


class PostgresFlowStore(FlowStore):
    """`FlowStore` in PostgreSQL: shared by runtimes, runs owned through leases."""

    remote = True

    def __init__(self, url: str, *, owner: str | None = None) -> None:
        conninfo, self.lease_s, self.retry_s = _settings(url)
        self.location = safe_url(url)
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.link = Link("store", conninfo)
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise DatabaseUnavailable(
                "the PostgreSQL flow store needs psycopg: pip install 'oneiric-runtime[postgres]'"
            ) from None
        self._errors: tuple[type[BaseException], ...] = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
        )
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True, "options": "-c search_path=oneiric"},
            open=False,
            timeout=10,
            reconnect_timeout=self.retry_s,
            check=ConnectionPool.check_connection,
        )
        try:
            # One direct connection first: a refused or unknown host fails at once, with
            # the driver's reason, where the pool would retry it for its whole timeout.
            psycopg.connect(conninfo, connect_timeout=10).close()
            self._pool.open(wait=True, timeout=10)
            self._migrate()
        except Exception as exc:
            self._pool.close()
            raise DatabaseUnavailable(
                f"flow store {self.location} is unreachable: {_first_line(exc)}"
            ) from None
        self._db: Any = _Pooled(self)

    def close(self) -> None:
        self._pool.close()

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS oneiric")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS oneiric.schema_version "
                "(version INTEGER NOT NULL, migrated_at DOUBLE PRECISION NOT NULL)"
            )
            row = conn.execute("SELECT max(version) FROM oneiric.schema_version").fetchone()
            current = (row[0] if row else None) or 0
            if current > SCHEMA_VERSION:
                raise DatabaseUnavailable(
                    f"schema version {current} is newer than this runtime's "
                    f"({SCHEMA_VERSION}); upgrade oneiric-runtime"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                conn.execute("SET LOCAL search_path = oneiric")
                conn.execute(MIGRATIONS[version - 1])
                conn.execute(
                    "INSERT INTO oneiric.schema_version VALUES (%s, %s)", (version, time.time())
                )

    def schema_version(self) -> int:
        row = self._call(
            lambda: self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        )
        return int(row[0]) if row and row[0] is not None else 0

    # -- connection handling ------------------------------------------------------------
    def _call(self, op: Callable[[], T]) -> T:
        """`op()`, retried with backoff while the database is unreachable (`retry_s` at most)."""
        delay, deadline = RETRY_MIN_S, time.monotonic() + self.retry_s
        while True:
            try:
                result = op()
            except self._errors as exc:
                wait, delay = backoff(delay, self.link.rng)
                if time.monotonic() + wait > deadline:
                    self.link.failed(exc, 0, _first_line(exc))
                    self.link.gave_up()
                    raise DatabaseUnavailable(
                        f"flow store {self.location} unreachable for {self.retry_s:g}s: "
                        f"{_first_line(exc)}"
                    ) from None
                self.link.failed(exc, wait, _first_line(exc))
                time.sleep(wait)
                continue
            self.link.restored()
            return result

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._pool.connection() as conn, conn.transaction():
            yield _Conn(conn)

    # -- runs ----------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        workflow: str,
        plan_digest: str | None,
        definition: list[dict[str, Any]],
        input_json: str,
        trigger: str,
    ) -> bool:
        def create() -> bool:
            now = time.time()
            with self._transaction() as db:
                found = db.execute("SELECT owner FROM runs WHERE id = ?", (run_id,)).fetchone()
                if found is not None:
                    return bool(found[0] == self.owner)  # a retried call that committed
                db.execute(
                    "INSERT INTO runs (id, workflow, plan_digest, definition, input, status, "
                    "trigger, owner_pid, owner, lease_until, created_at, updated_at) "
                    f"VALUES (?,?,?,?,?,'running',?,?,?,{NOW} + ?,?,?)",
                    (
                        run_id,
                        workflow,
                        plan_digest,
                        json.dumps(definition, sort_keys=True),
                        input_json,
                        trigger,
                        os.getpid(),
                        self.owner,
                        self.lease_s,
                        now,
                        now,
                    ),
                )
                db.executemany(
                    "INSERT INTO nodes (run_id, name, task, status) VALUES (?, ?, ?, 'pending')",
                    [(run_id, node["name"], node["task"]) for node in definition],
                )
            return True

        return self._call(create)

    def claim_for_resume(self, run_id: str) -> RunRecord:
        """Take over a stopped run, or a running one whose owner's lease expired."""

        def claim() -> RunRecord:
            with self._transaction() as db:
                row = db.execute(
                    f"SELECT status, owner, lease_until > {NOW} FROM runs WHERE id = ? FOR UPDATE",
                    (run_id,),
                ).fetchone()
                if row is None:
                    raise StoreError(f'no workflow run "{run_id}"')
                status, owner, leased = row
                if status == "succeeded":
                    raise StoreError(
                        f"run {run_id} already finished (succeeded); nothing to resume"
                    )
                if status == "running" and owner != self.owner and leased:
                    raise StoreError(
                        f"run {run_id} is still running (owned by {owner}, lease not expired)"
                    )
                self._take(db, [run_id])
                claimed = self._run(db, run_id)
            assert claimed is not None
            return claimed

        return self._call(claim)

    def _take(self, db: _Conn, run_ids: list[str]) -> None:
        db.execute(
            "UPDATE nodes SET status = 'pending', error = NULL "
            "WHERE run_id = ANY(?) AND status != 'succeeded'",
            (run_ids,),
        )
        db.execute(
            "UPDATE runs SET status = 'running', error = NULL, owner = ?, owner_pid = ?, "
            f"lease_until = {NOW} + ?, cancel_requested = 0, updated_at = ?, "
            "finished_at = NULL WHERE id = ANY(?)",
            (self.owner, os.getpid(), self.lease_s, time.time(), run_ids),
        )

    def adopt(self, limit: int) -> list[str]:
        """Take over up to `limit` running runs whose lease expired (one taker each)."""

        def adopt() -> list[str]:
            with self._transaction() as db:
                ids = [
                    row[0]
                    for row in db.execute(
                        "SELECT id FROM runs WHERE status = 'running' AND cancel_requested = 0 "
                        f"AND lease_until < {NOW} ORDER BY created_at "
                        "LIMIT ? FOR UPDATE SKIP LOCKED",
                        (limit,),
                    ).fetchall()
                ]
                if ids:
                    self._take(db, ids)
            return ids

        return self._call(adopt)

    def renew(self, run_ids: Iterable[str]) -> set[str]:
        return self._renew("runs", run_ids)

    def _renew(self, table: str, ids: Iterable[str]) -> set[str]:
        """Extend this runtime's leases on rows of `table` (runs, scheduled): the ids it lost."""
        wanted = sorted(set(ids))
        if not wanted:
            return set()

        def renew() -> set[str]:
            kept = self._db.execute(
                f"UPDATE {table} SET lease_until = {NOW} + ? "
                "WHERE id = ANY(?) AND owner = ? AND status = 'running' RETURNING id",
                (self.lease_s, wanted, self.owner),
            ).fetchall()
            return set(wanted) - {row[0] for row in kept}

        return self._call(renew)

    def release(self, run_ids: Iterable[str]) -> None:
        self._release("runs", run_ids)

    def _release(self, table: str, ids: Iterable[str]) -> None:
        """End this runtime's leases on rows of `table` now: another runtime takes them."""
        wanted = sorted(set(ids))
        if wanted:
            self._call(
                lambda: self._db.execute(
                    f"UPDATE {table} SET lease_until = {NOW} "
                    "WHERE id = ANY(?) AND owner = ? AND status = 'running'",
                    (wanted, self.owner),
                )
            )

    def _owned(self, db: Any, run_id: str) -> None:
        row = db.execute("SELECT owner FROM runs WHERE id = ? FOR UPDATE", (run_id,)).fetchone()
        if row is None or row[0] != self.owner:
            raise LeaseLost(
                f"run {run_id} is now owned by {row[0] if row else 'nobody'}, not {self.owner}"
            )

    def node_started(self, run_id: str, name: str, attempt: int, now: float) -> None:
        def started() -> None:
            with self._transaction() as db:
                self._owned(db, run_id)
                db.execute(
                    "UPDATE nodes SET status = 'running', attempts = ?, "
                    "started_at = coalesce(started_at, ?) WHERE run_id = ? AND name = ?",
                    (attempt, now, run_id, name),
                )

        self._call(started)

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
        """The checkpoint: written only while this runtime owns the run."""

        def finished() -> None:
            with self._transaction() as db:
                self._owned(db, run_id)
                db.execute(
                    "UPDATE nodes SET status = ?, attempts = ?, result = ?, error = ?, "
                    "finished_at = ?, duration_ms = ? WHERE run_id = ? AND name = ?",
                    (
                        status,
                        attempts,
                        result_json,
                        error,
                        now,
                        (now - started_at) * 1000,
                        run_id,
                        name,
                    ),
                )

        self._call(finished)

    def finish_run(
        self, run_id: str, status: str, error: str | None, node_updates: Iterable[tuple[str, str]]
    ) -> None:
        updates = list(node_updates)

        def finish() -> None:
            now = time.time()
            with self._transaction() as db:
                self._owned(db, run_id)
                db.executemany(
                    "UPDATE nodes SET status = ? WHERE run_id = ? AND name = ?",
                    [(state, run_id, name) for name, state in updates],
                )
                db.execute(
                    "UPDATE runs SET status = ?, error = ?, updated_at = ?, finished_at = ?, "
                    "lease_until = NULL WHERE id = ?",
                    (status, error, now, now, run_id),
                )

        self._call(finish)

    def request_cancel(self, run_id: str) -> RunRecord:
        return self._call(lambda: super(PostgresFlowStore, self).request_cancel(run_id))

    def cancel_requested(self, run_id: str) -> bool:
        return self._call(lambda: super(PostgresFlowStore, self).cancel_requested(run_id))

    def data_version(self) -> int:
        """No cheap change counter here: every poll reads the cancel flag."""
        return time.monotonic_ns()

    def run(self, run_id: str) -> RunRecord | None:
        def read() -> RunRecord | None:
            with self._transaction() as db:
                return self._run(db, run_id)

        return self._call(read)

    def runs(self, limit: int = 50, workflow: str | None = None) -> list[RunRecord]:
        return self._call(lambda: super(PostgresFlowStore, self).runs(limit, workflow))

    # -- scheduled tasks ---------------------------------------------------------------
    def schedule(self, task_id: str, task: str, input_json: str, due_at: float) -> bool:
        return self._call(
            lambda: super(PostgresFlowStore, self).schedule(task_id, task, input_json, due_at)
        )

    def claim_due(self, now: float, limit: int) -> list[Scheduled]:
        """Claim up to `limit` due tasks, or tasks whose claimer's lease expired (one taker each).

        `due_at` is compared with `now` (the caller's clock, as `schedule` used
        it); leases with the database's clock.
        """

        def claim() -> list[Scheduled]:
            rows = self._db.execute(
                "UPDATE scheduled SET status = 'running', owner = ?, owner_pid = ?, "
                f"lease_until = {NOW} + ?, attempts = attempts + 1 "
                "WHERE id IN (SELECT id FROM scheduled "
                "WHERE (status = 'pending' AND due_at <= ?) "
                f"OR (status = 'running' AND lease_until < {NOW}) "
                "ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED) "
                f"RETURNING {SCHEDULED_COLUMNS}",
                (self.owner, os.getpid(), self.lease_s, now, limit),
            ).fetchall()
            return sorted(map(scheduled_row, rows), key=lambda s: (s.due_at, s.id))

        return self._call(claim)

    def renew_scheduled(self, task_ids: Iterable[str]) -> set[str]:
        return self._renew("scheduled", task_ids)

    def scheduled_finished(
        self, task_id: str, status: str, result_json: str | None, error: str | None
    ) -> bool:
        """The outcome, written only while this runtime holds the claim."""

        def finished() -> bool:
            rows = self._db.execute(
                "UPDATE scheduled SET status = ?, result = ?, error = ?, finished_at = ?, "
                "lease_until = NULL WHERE id = ? AND status = 'running' AND owner = ?",
                (status, result_json, error, time.time(), task_id, self.owner),
            )
            return bool(rows.rowcount == 1)

        return self._call(finished)

    def release_scheduled(self, task_ids: Iterable[str]) -> None:
        self._release("scheduled", task_ids)

    def scheduled(self, limit: int = 100) -> list[Scheduled]:
        return self._call(lambda: super(PostgresFlowStore, self).scheduled(limit))

    # -- dead letters ----------------------------------------------------------------------
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
        def add() -> int:
            row = self._db.execute(
                "INSERT INTO dead_letters (event_id, topic, handler, payload, headers, error, "
                "attempts, created_at) VALUES (?,?,?,?,?,?,?,?) RETURNING id",
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
            ).fetchone()
            assert row is not None
            return int(row[0])

        return self._call(add)

    def dead_letters(self, include_resolved: bool = False, limit: int = 100) -> list[Any]:
        return self._call(
            lambda: super(PostgresFlowStore, self).dead_letters(include_resolved, limit)
        )

    def dead_letter(self, letter_id: int) -> Any:
        return self._call(lambda: super(PostgresFlowStore, self).dead_letter(letter_id))

    def replayed(self, letter_id: int, error: str | None, attempts: int) -> None:
        self._call(lambda: super(PostgresFlowStore, self).replayed(letter_id, error, attempts))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
