"""DuckDB database (embedded analytics engine): one database, a bounded pool of cursors.

Extra: `oneiric-runtime[duckdb]`.  Parameters use `?` placeholders, like SQLite, so the two
swap for each other.  Each call borrows one of `max_connections` cursors (DuckDB cursors
are per-thread connections to the same database) and waits at most `timeout` for one.
Embedded: no server can go away; `health()` runs `SELECT 1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from oneiric.adapters.pool import Pool


class DuckDBDatabase:
    def __init__(
        self,
        *,
        path: str = ":memory:",
        read_only: bool = False,
        max_connections: int = 4,
        memory_limit: int | None = None,
        threads: int | None = None,
        timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {}
        if memory_limit is not None:
            settings["memory_limit"] = f"{memory_limit}B"
        if threads is not None:
            settings["threads"] = threads
        self.name = f"DuckDB at {path}"
        self._db = duckdb.connect(path, read_only=read_only, config=settings)
        self._pool: Pool[duckdb.DuckDBPyConnection] = Pool(
            self._db.cursor,
            close=lambda cursor: cursor.close(),
            alive=lambda _cursor: True,
            size=max_connections,
            timeout=timeout.total_seconds(),
            name=self.name,
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; return the number of rows changed."""
        with self._pool.connection() as cursor:
            rows = cursor.execute(sql, list(params)).fetchall()
        # DML answers one row holding the count; DDL answers none.
        return int(rows[0][0]) if len(rows) == 1 and len(rows[0]) == 1 else 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as cursor:
            return cursor.execute(sql, list(params)).fetchall()

    def health(self) -> bool:
        return self.query("SELECT 1") == [(1,)]

    def close(self) -> None:
        self._pool.close()
        self._db.close()
