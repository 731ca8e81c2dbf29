"""A bounded connection pool for drivers without one, and the error of an unreachable server.

`Pool.connection()` lends one connection: at most `size` are open at once, a caller waits
at most `timeout` seconds for a free one, an idle connection is checked (`alive`) before it
is lent, and one that failed during a call is closed instead of returned.  A server that
went away therefore costs each caller one clear `Unavailable` error, and the pool
reconnects by itself once the server is back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

C = TypeVar("C")


class Unavailable(ConnectionError):
    """The server cannot be reached (or the pool is exhausted/closed); the message says which."""


class Pool(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], C],
        *,
        close: Callable[[C], None],
        alive: Callable[[C], bool],
        size: int,
        timeout: float,
        name: str,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection (max_connections >= 1)")
        self._connect = connect
        self._close = close
        self._alive = alive
        self._size = size
        self._timeout = timeout
        self.name = name
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[C] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[C]:
        if self._closed:
            raise Unavailable(f"{self.name}: the adapter is closed")
        if not self._slots.acquire(timeout=self._timeout):
            raise Unavailable(
                f"{self.name}: all {self._size} connections busy for {self._timeout:g}s"
            )
        try:
            conn = self._checkout()
            try:
                yield conn
            except BaseException:
                self._discard(conn)  # it may be broken; the next caller gets a fresh one
                raise
            with self._lock:
                if not self._closed:
                    self._idle.append(conn)
                    return
            self._discard(conn)
        finally:
            self._slots.release()

    def _checkout(self) -> C:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if self._alive(conn):
                return conn
            self._discard(conn)

    def _discard(self, conn: C) -> None:
        with contextlib.suppress(Exception):
            self._close(conn)

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Close every idle connection now; the ones lent out are closed when returned."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)
