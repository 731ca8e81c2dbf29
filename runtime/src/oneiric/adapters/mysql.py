"""MySQL / MariaDB database (PyMySQL, pure Python): pooled, bounded, autocommit statements.

Extra: `oneiric-runtime[mysql]`.  Parameters use `%s` placeholders.  A call waits at most
`timeout` for a pooled connection; connecting, reading and writing are each bounded by
`connect_timeout` / `read_timeout`.  An unreachable server raises
`oneiric.adapters.pool.Unavailable`; the pool reconnects when the server is back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pymysql
import pymysql.cursors

from oneiric.adapters.pool import Pool, Unavailable

# Client-side codes of a connection that failed or was lost (CR_* in MySQL's errmsg.h).
_GONE = {2002, 2003, 2006, 2013, 2055}


class MySQLDatabase:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str = "root",
        password: str | None = None,
        database: str | None = None,
        max_connections: int = 10,
        connect_timeout: timedelta = timedelta(seconds=5),
        read_timeout: timedelta = timedelta(seconds=30),
        timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        self.name = f"MySQL at {host}:{port}/{database or ''}"
        self._options: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password or "",
            "database": database,
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout.total_seconds())),
            "read_timeout": read_timeout.total_seconds(),
            "write_timeout": read_timeout.total_seconds(),
            "charset": "utf8mb4",
        }
        self._pool: Pool[pymysql.connections.Connection[Any]] = Pool(
            self._connect,
            close=lambda conn: conn.close(),
            alive=_alive,
            size=max_connections,
            timeout=timeout.total_seconds(),
            name=self.name,
        )

    def _connect(self) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(**self._options)

    @contextmanager
    def _cursor(self) -> Iterator[pymysql.cursors.Cursor]:
        try:
            with self._pool.connection() as conn, conn.cursor() as cursor:
                yield cursor
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in _GONE:
                raise Unavailable(f"{self.name}: {exc.args[-1]}") from None
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; return the number of rows changed."""
        with self._cursor() as cursor:
            return int(cursor.execute(sql, tuple(params) or None))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(sql, tuple(params) or None)
            return list(cursor.fetchall())

    def health(self) -> bool:
        """A real round trip: `SELECT 1` on a pooled connection."""
        try:
            return self.query("SELECT 1") == [(1,)]
        except Unavailable:
            return False

    def close(self) -> None:
        self._pool.close()


def _alive(conn: pymysql.connections.Connection[Any]) -> bool:
    try:
        conn.ping(reconnect=False)
    except pymysql.err.Error:
        return False
    return True
