"""HTTP client (httpx, async): pooled, bounded, with retries, backoff and a circuit breaker.

Extra: none (httpx is a runtime dependency).  Relative URLs join `base_url`.  A request
that fails on the way (connect error, timeout) or answers one of `retry_statuses` is tried
again up to `retries` times, waiting `backoff` * 2**n (at most `backoff_max`); methods that
are not idempotent (POST, PATCH) are retried only when the request never reached the
server (connect errors).  After `failure_threshold` failed calls in a row the breaker
opens: calls fail at once with `CircuitOpen` for `reset_after`, then one trial call decides
(success closes it, failure opens it again).  `health()` GETs `health_path` (bypassing the
breaker): true for any answer below 500.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import anyio
import httpx

from oneiric.adapters.pool import Unavailable

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class CircuitOpen(Unavailable):
    """Too many failures in a row: calls are refused until the breaker's trial call."""


class Breaker:
    """Consecutive-failure circuit breaker: closed → open (for `reset_after`) → half-open."""

    def __init__(self, threshold: int, reset_after: float) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.reset_after else "open"

    def admit(self, name: str) -> None:
        with self._lock:
            if self.opened_at is None:
                return
            waited = time.monotonic() - self.opened_at
            if waited < self.reset_after or self._trial:
                left = max(0.0, self.reset_after - waited)
                raise CircuitOpen(
                    f"{name}: circuit open after {self.failures} failures in a row; "
                    f"next trial in {left:.1f}s"
                )
            self._trial = True  # half-open: exactly one call goes through

    def record(self, ok: bool) -> None:
        with self._lock:
            self._trial = False
            if ok:
                self.failures, self.opened_at = 0, None
                return
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = time.monotonic()


class HttpClient:
    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        timeout: timedelta = timedelta(seconds=10),
        connect_timeout: timedelta = timedelta(seconds=5),
        max_connections: int = 100,
        max_keepalive: int = 20,
        retries: int = 3,
        backoff: timedelta = timedelta(milliseconds=200),
        backoff_max: timedelta = timedelta(seconds=5),
        retry_statuses: Sequence[int] = (502, 503, 504),
        failure_threshold: int = 5,
        reset_after: timedelta = timedelta(seconds=30),
        health_path: str = "/",
    ) -> None:
        if retries < 0 or failure_threshold < 1:
            raise ValueError("retries must be >= 0 and failure_threshold >= 1")
        self.name = f"HTTP {base_url}"
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout.total_seconds(), connect=connect_timeout.total_seconds()),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_keepalive
            ),
            follow_redirects=False,
        )
        self._retries = retries
        self._backoff = backoff.total_seconds()
        self._backoff_max = backoff_max.total_seconds()
        self._retry_statuses = frozenset(retry_statuses)
        self._health_path = health_path
        self.breaker = Breaker(failure_threshold, reset_after.total_seconds())

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The answer (any status; the last one once retries are spent); errors say why."""
        method = method.upper()
        self.breaker.admit(self.name)
        attempt = 0
        while True:
            try:
                answer = await self._client.request(
                    method, url, params=params, json=json, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt < self._retries and (method in IDEMPOTENT or not sent):
                    attempt = await self._pause(attempt)
                    continue
                self.breaker.record(ok=False)
                kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
                raise Unavailable(
                    f"{self.name}: {method} {url} {kind} after {attempt + 1} attempt(s): "
                    f"{type(exc).__name__}"
                ) from None
            if answer.status_code in self._retry_statuses:
                if attempt < self._retries and method in IDEMPOTENT:
                    attempt = await self._pause(attempt)
                    continue
                self.breaker.record(ok=False)
                return answer
            self.breaker.record(ok=answer.status_code < 500)
            return answer

    async def _pause(self, attempt: int) -> int:
        await anyio.sleep(min(self._backoff * 2**attempt, self._backoff_max))
        return attempt + 1

    async def get(self, url: str, *, params: Mapping[str, str] | None = None) -> httpx.Response:
        return await self.request("GET", url, params=params)

    async def post(self, url: str, *, json: Any = None) -> httpx.Response:
        return await self.request("POST", url, json=json)

    async def health(self) -> bool:
        """A real request to `health_path`, outside the retries and the breaker."""
        try:
            answer = await self._client.get(self._health_path)
        except httpx.TransportError:
            return False
        return answer.status_code < 500

    async def aclose(self) -> None:
        await self._client.aclose()
