"""PostgreSQL, MariaDB and DuckDB adapters against real servers (and the real embedded engine).

The servers are Debian's, started by the tests in temporary directories on free ports
(tests/runtime/servers.py); the tests take them away and bring them back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from oneiric._lifecycle.runtime import Runtime
from oneiric.adapters.duckdb import DuckDBDatabase
from oneiric.adapters.mysql import MySQLDatabase
from oneiric.adapters.pool import Unavailable
from oneiric.adapters.postgres import PostgresDatabase
from oneiric.protocols import Database
from planbuild import component, plan
from servers import Server, mariadb_server, postgres_server

pytestmark = pytest.mark.slow

SECOND = timedelta(seconds=1)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    yield from postgres_server()


@pytest.fixture(scope="module")
def mariadb() -> Iterator[Server]:
    yield from mariadb_server()


def pg_dsn(server: Server) -> str:
    return f"postgresql://postgres@127.0.0.1:{server.port}/postgres"


def check_round_trip(db: Any, table: str) -> None:
    assert isinstance(db, Database)
    assert db.health()
    db.execute(f"DROP TABLE IF EXISTS {table}")
    db.execute(f"CREATE TABLE {table} (id VARCHAR(20) PRIMARY KEY, total INTEGER)")
    threads = [
        threading.Thread(
            target=db.execute, args=(f"INSERT INTO {table} VALUES (%s, %s)", (f"o{i}", i))
        )
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db.query(f"SELECT count(*), sum(total) FROM {table}")[0] == (20, 190)
    assert db.execute(f"UPDATE {table} SET total = total + 1 WHERE total < %s", (5,)) == 5


def wait_until(check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def check_server_going_away(db: Any, server: Server, wait: float) -> None:
    """Health turns false, calls fail fast with a clear error, the adapter recovers."""
    assert db.query("SELECT 1") == [(1,)]
    server.stop()
    try:
        assert db.health() is False
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"127\.0\.0\.1"):
            db.query("SELECT 1")
        assert time.monotonic() - started < wait + 2
    finally:
        server.start()
    wait_until(db.health)
    assert db.query("SELECT 1") == [(1,)]


def test_postgres_round_trip_from_many_threads(postgres: Server) -> None:
    db = PostgresDatabase(dsn=pg_dsn(postgres), max_connections=4)
    check_round_trip(db, "orders")
    db.close()


def test_postgres_bounds_pool_and_statements(postgres: Server) -> None:
    db = PostgresDatabase(
        dsn=pg_dsn(postgres),
        max_connections=1,
        timeout=timedelta(milliseconds=300),
        statement_timeout=timedelta(milliseconds=200),
    )
    with pytest.raises(psycopg.errors.QueryCanceled):
        db.query("SELECT pg_sleep(2)")
    busy = threading.Thread(target=lambda: db.query("SELECT pg_sleep(0.15)"))
    busy.start()
    time.sleep(0.05)
    # One connection, held by the sleeper: still served once it is free (0.15 s < 0.3 s).
    assert db.query("SELECT 1") == [(1,)]
    busy.join()
    db.close()
    with pytest.raises(Unavailable):
        db.query("SELECT 1")


def test_postgres_server_going_away_and_coming_back(postgres: Server) -> None:
    db = PostgresDatabase(dsn=pg_dsn(postgres), timeout=SECOND, connect_timeout=SECOND)
    check_server_going_away(db, postgres, wait=1)
    db.close()


def test_postgres_unreachable_at_start_is_a_clear_error() -> None:
    from servers import free_port

    db = PostgresDatabase(
        dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        timeout=timedelta(milliseconds=500),
    )
    assert db.health() is False
    with pytest.raises(Unavailable, match=r"PostgreSQL at 127\.0\.0\.1:\d+/postgres"):
        db.execute("SELECT 1")
    db.close()


def test_mysql_round_trip_from_many_threads(mariadb: Server) -> None:
    db = MySQLDatabase(port=mariadb.port, max_connections=4)
    db.execute("CREATE DATABASE IF NOT EXISTS shop")
    db.close()
    db = MySQLDatabase(port=mariadb.port, database="shop", max_connections=4)
    check_round_trip(db, "orders")
    db.close()
    with pytest.raises(Unavailable, match="closed"):
        db.query("SELECT 1")


def test_mysql_bounds_pool(mariadb: Server) -> None:
    db = MySQLDatabase(port=mariadb.port, max_connections=1, timeout=timedelta(milliseconds=200))
    busy = threading.Thread(target=lambda: db.query("SELECT SLEEP(1)"))
    busy.start()
    time.sleep(0.2)
    with pytest.raises(Unavailable, match=r"all 1 connections busy for 0\.2s"):
        db.query("SELECT 1")
    busy.join()
    assert db.query("SELECT 1") == [(1,)]
    db.close()


def test_mysql_server_going_away_and_coming_back(mariadb: Server) -> None:
    db = MySQLDatabase(port=mariadb.port, connect_timeout=SECOND, timeout=SECOND)
    check_server_going_away(db, mariadb, wait=1)
    db.close()


def test_duckdb_round_trip_persists(tmp_path: Path) -> None:
    path = str(tmp_path / "db" / "shop.duckdb")
    db = DuckDBDatabase(path=path, max_connections=2, memory_limit=256 * 1024 * 1024)
    assert isinstance(db, Database)
    assert db.health()
    db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)")
    threads = [
        threading.Thread(target=db.execute, args=("INSERT INTO orders VALUES (?, ?)", (f"o{i}", i)))
        for i in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db.execute("UPDATE orders SET total = total + 1 WHERE total < ?", (5,)) == 5
    db.close()
    again = DuckDBDatabase(path=path, read_only=True)
    assert again.query("SELECT count(*), sum(total) FROM orders") == [(20, 195)]
    with pytest.raises(Exception, match="read-only"):
        again.execute("DELETE FROM orders")
    again.close()


async def swap_under_load(
    callers: Any, first: dict[str, Any], second: dict[str, Any], call: str
) -> None:
    runtime = Runtime()
    await runtime.apply(plan(first))
    db = runtime.handle("adapter:db")
    with callers(6, lambda: db.query(call)) as calls:
        await anyio.sleep(0.3)
        await runtime.apply(plan(second))
        await anyio.sleep(0.3)
    assert calls.failures == []
    assert calls.total > 20
    assert db.provider == second["provider"]
    await runtime.stop()


@pytest.mark.anyio
async def test_live_swap_postgres_to_mariadb_under_load(
    postgres: Server, mariadb: Server, callers: Any
) -> None:
    first = component(
        "adapter:db",
        "postgres",
        impl="oneiric.adapters.postgres:PostgresDatabase",
        config={"dsn": pg_dsn(postgres)},
    )
    second = component(
        "adapter:db",
        "mariadb",
        impl="oneiric.adapters.mysql:MySQLDatabase",
        config={"port": mariadb.port},
    )
    for c in (first, second):
        del c["config"]["tag"]
    await swap_under_load(callers, first, second, "SELECT 1")


@pytest.mark.anyio
async def test_live_swap_sqlite_to_duckdb_under_load(tmp_path: Path, callers: Any) -> None:
    first = component(
        "adapter:db",
        "sqlite",
        impl="oneiric.adapters.sqlite:SQLiteDatabase",
        config={"path": str(tmp_path / "a.db")},
    )
    second = component(
        "adapter:db",
        "duckdb",
        impl="oneiric.adapters.duckdb:DuckDBDatabase",
        config={"path": str(tmp_path / "b.duckdb")},
    )
    for c in (first, second):
        del c["config"]["tag"]
    await swap_under_load(callers, first, second, "SELECT 1")
