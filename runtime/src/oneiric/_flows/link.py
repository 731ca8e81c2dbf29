"""The state of one connection to a broker or a database, as an operator sees it.

Every long-running process that holds such a connection (`event consume`,
`worker`, `workflow serve`, a dispatcher of nodes) keeps one `Link` per
endpoint and writes `as_json()` into its status file every second:

    connected     calls go through (`since`: when it last became so)
    reconnecting  calls fail and are retried with backoff: `attempt` (failed
                  tries since the connection was lost), `next_retry_at`,
                  `last_error`, `last_error_at`, `since` (when it was lost)
    down          a call gave up during this outage (its retry budget ran
                  out: the PostgreSQL store's `retry`); later calls still try
                  (`attempt`, `next_retry_at`) until one goes through

A lost connection is retried with jittered exponential backoff, 0.1 s
doubling to 5 s: never a tight loop, never a crash.  `retrying` is the async
loop (Redis); the PostgreSQL store drives `failed`/`restored`/`gave_up`
itself from its worker threads (hence the lock).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

T = TypeVar("T")
RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0


def safe_url(url: str) -> str:
    """`url` with its password masked (for messages, status files and metrics)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def backoff(delay: float, rng: random.Random) -> tuple[float, float]:
    """(seconds to wait now, the next delay): jittered in [delay/2, delay], doubling to 5 s."""
    return delay / 2 + rng.random() * delay / 2, min(RETRY_MAX_S, delay * 2)


class Link:
    """One connection's state (`as_json`); `retrying` runs a call through lost connections."""

    def __init__(self, role: str, url: str) -> None:
        self.role = role  # broker | store | tasks
        self.url = safe_url(url)
        self.state = "connected"
        self.since = time.time()
        self.attempt = 0
        self.next_retry_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.reconnects = 0
        self._lock = threading.Lock()
        self.rng = random.Random()

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def failed(self, exc: BaseException, wait_s: float, error: str | None = None) -> bool:
        """A call failed and is retried in `wait_s`; True when this call lost the connection."""
        now = time.time()
        with self._lock:
            lost = self.state == "connected"
            if lost:
                self.since, self.attempt = now, 0
            if self.state != "down":
                self.state = "reconnecting"
            self.attempt += 1
            self.next_retry_at = now + wait_s
            self.last_error = f"{type(exc).__name__}: {error or exc}"
            self.last_error_at = now
        return lost

    def gave_up(self) -> None:
        """A call ran out of retries (the caller reports it); the state is `down`."""
        with self._lock:
            self.state = "down"
            self.next_retry_at = None

    def restored(self) -> bool:
        """A call went through; True when that ends an outage."""
        if self.state == "connected":  # the common path: no lock
            return False
        with self._lock:
            if self.state == "connected":
                return False
            self.state, self.since = "connected", time.time()
            self.attempt, self.next_retry_at = 0, None
            self.reconnects += 1
        return True

    async def retrying(
        self,
        op: Callable[[], Awaitable[T]],
        errors: tuple[type[BaseException], ...],
        log: Any,
    ) -> T:
        """`op()`, retried with backoff for as long as it fails with one of `errors`."""
        delay = RETRY_MIN_S
        while True:
            try:
                result = await op()
            except errors as exc:
                wait, delay = backoff(delay, self.rng)
                if self.failed(exc, wait):
                    log.warning(f"{self.role} connection lost", url=self.url, error=str(exc))
                await anyio.sleep(wait)
                continue
            if self.restored():
                log.info(f"{self.role} connection restored", url=self.url)
            return result

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "role": self.role,
                "url": self.url,
                "state": self.state,
                "connected": self.state == "connected",
                "since": self.since,
                "attempt": self.attempt,
                "next_retry_at": self.next_retry_at,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "reconnects": self.reconnects,
            }
