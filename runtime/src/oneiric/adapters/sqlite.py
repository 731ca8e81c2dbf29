"""SQLite database: one connection shared by threads under a lock, WAL journal."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from oneiric import _sqlite


class SQLiteDatabase:
    def __init__(
        self, *, path: str = ":memory:", timeout: timedelta = timedelta(seconds=5)
    ) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Activated in a worker thread, used from any thread: the lock serialises access.
        self._db = _sqlite.connect(path, timeout_s=timeout.total_seconds(), threads=True)
        self._lock = threading.Lock()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; return the number of rows changed."""
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def health(self) -> bool:
        return self.query("SELECT 1") == [(1,)]

    def close(self) -> None:
        with self._lock:
            self._db.close()
