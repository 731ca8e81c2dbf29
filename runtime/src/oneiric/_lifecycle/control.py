"""Operator controls shared by the CLI and a running runtime: one SQLite file in the state dir.

The CLI (`oneiric pause|resume|drain`) writes; the running process polls
(`PRAGMA data_version`, cheap) about every quarter second, obeys, and writes
the outcome back.  WAL mode lets both sides work without blocking each other.
Standard library only: the CLI must start fast.

Schema (documented in docs/runtime.md):

    controls(component TEXT PRIMARY KEY,  -- "domain:key"
             state     TEXT NOT NULL,     -- 'paused' | 'drained'
             updated_at REAL NOT NULL)    -- unix time; a row exists while not resumed
    requests(id INTEGER PRIMARY KEY AUTOINCREMENT,
             op        TEXT NOT NULL,     -- 'pause' | 'resume' | 'drain' | 'rotate'
             components TEXT NOT NULL,    -- JSON list of "domain:key" (rotate: secret
                                          -- references, none for all)
             deadline_ms INTEGER,         -- drain only
             created_at REAL NOT NULL,
             done_at   REAL,              -- set by the runtime once obeyed
             result    TEXT)              -- JSON written by the runtime
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oneiric import _sqlite

FILENAME = "control.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS controls (
    component TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('paused', 'drained')),
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('pause', 'resume', 'drain', 'rotate')),
    components TEXT NOT NULL,
    deadline_ms INTEGER,
    created_at REAL NOT NULL,
    done_at REAL,
    result TEXT
);
"""


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    op: str
    components: list[str]
    deadline_ms: int | None


class ControlStore:
    """One connection to the state dir's control database."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILENAME
        self._db = _sqlite.connect(self.path, timeout_s=5.0)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._version = -1

    def _migrate(self) -> None:
        """A control.db made before 'rotate' existed: widen the op CHECK, keeping requests."""
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'requests'"
        ).fetchone()
        if row is None or "'rotate'" in row[0]:
            return
        create = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS requests") :]
        self._db.executescript(
            "BEGIN IMMEDIATE; ALTER TABLE requests RENAME TO requests_old;"
            f"{create} INSERT INTO requests SELECT * FROM requests_old;"
            "DROP TABLE requests_old; COMMIT;"
        )

    def close(self) -> None:
        self._db.close()

    # -- CLI side ------------------------------------------------------------
    def request(self, op: str, components: list[str], deadline_ms: int | None = None) -> int:
        """Record the wanted state and a request for the running process; return its id."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for component in components if op != "rotate" else ():
                if op == "resume":
                    self._db.execute("DELETE FROM controls WHERE component = ?", (component,))
                else:
                    state = "paused" if op == "pause" else "drained"
                    self._db.execute(
                        "INSERT INTO controls VALUES (?, ?, ?) ON CONFLICT(component) "
                        "DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                        (component, state, now),
                    )
            cursor = self._db.execute(
                "INSERT INTO requests (op, components, deadline_ms, created_at) VALUES (?,?,?,?)",
                (op, json.dumps(components), deadline_ms, now),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def result(self, request_id: int) -> dict[str, Any] | None:
        """The runtime's answer to a request, or None while it has not been obeyed."""
        row = self._db.execute(
            "SELECT result FROM requests WHERE id = ? AND done_at IS NOT NULL", (request_id,)
        ).fetchone()
        if row is None:
            return None
        answer: dict[str, Any] = json.loads(row[0])
        return answer

    # -- runtime side --------------------------------------------------------
    def changed(self) -> bool:
        """True when another connection committed since the last call (cheap to poll)."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return False
        self._version = version
        return True

    def controls(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT component, state FROM controls").fetchall())

    def pending(self) -> list[Request]:
        rows = self._db.execute(
            "SELECT id, op, components, deadline_ms FROM requests WHERE done_at IS NULL ORDER BY id"
        ).fetchall()
        return [Request(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def complete(self, request_id: int, result: dict[str, Any]) -> None:
        with self._db:
            self._db.execute(
                "UPDATE requests SET done_at = ?, result = ? WHERE id = ?",
                (time.time(), json.dumps(result, sort_keys=True), request_id),
            )
