"""PostgreSQL database (psycopg 3 with psycopg_pool): pooled, bounded, autocommit statements.

Extra: `oneiric-runtime[postgres]`.  Parameters use psycopg's `%s` placeholders.  A call
waits at most `timeout` for a pooled connection and runs at most `statement_timeout` on
the server; a server that cannot be reached raises `oneiric.adapters.pool.Unavailable`
within `timeout`, and the pool reconnects when the server is back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from oneiric.adapters.pool import Unavailable


class PostgresDatabase:
    def __init__(
        self,
        *,
        dsn: str = "postgresql://127.0.0.1:5432/postgres",
        password: str | None = None,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: timedelta = timedelta(seconds=5),
        timeout: timedelta = timedelta(seconds=5),
        statement_timeout: timedelta | None = timedelta(seconds=30),
    ) -> None:
        parts = conninfo_to_dict(dsn)
        self.name = (
            f"PostgreSQL at {parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
            f"/{parts.get('dbname', '')}"
        )
        options: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout.total_seconds())),
        }
        if password is not None:
            options["password"] = password
        if statement_timeout is not None:
            ms = int(statement_timeout.total_seconds() * 1000)
            options["options"] = f"-c statement_timeout={ms}"
        self._timeout = timeout.total_seconds()
        self._pool = ConnectionPool(
            dsn,
            kwargs=options,
            min_size=min_connections,
            max_size=max_connections,
            timeout=self._timeout,
            check=ConnectionPool.check_connection,
            name=self.name,
            open=False,
        )
        self._pool.open(wait=False)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise Unavailable(f"{self.name}: no connection within {self._timeout:g}s") from None
        except psycopg.OperationalError as exc:
            # No SQLSTATE (the client lost the server), class 08 (connection exception) or
            # 57P0x (the server shutting down); a cancelled statement (57014) stays itself.
            state = exc.sqlstate or "08"
            if state.startswith(("08", "57P0")):
                raise Unavailable(f"{self.name}: {str(exc).strip()}") from None
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; return the number of rows changed."""
        with self._connection() as conn:
            return conn.execute(sql, params or None).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, params or None).fetchall()

    def health(self) -> bool:
        """A real round trip: `SELECT 1` on a pooled connection."""
        try:
            return self.query("SELECT 1") == [(1,)]
        except Unavailable:
            return False

    def close(self) -> None:
        self._pool.close()
