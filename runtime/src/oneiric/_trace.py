"""Tracing hooks for the runtime's layers: no-ops unless OpenTelemetry is configured.

The lifecycle, delivery and flow code call `span`, `record` and `event` here;
with no `backend` installed (the default) they cost a global read and return
a shared no-op.  `oneiric._ops.tracing.install` sets `backend` to one built on
the OpenTelemetry SDK (extra `oneiric-runtime[otel]`), imported only then.
Standard library only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

Attributes = Mapping[str, str | int | float | bool]


class Span:
    """What code can do with the span it runs in (the no-op one does nothing)."""

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Set an attribute."""

    def fail(self, message: str) -> None:
        """Mark the span failed (error status) with `message`."""

    def event(self, name: str, **attributes: str | int | float | bool) -> None:
        """Add an event (e.g. a retry)."""


class Backend(Protocol):
    def span(
        self, name: str, attributes: Attributes, headers: Mapping[str, str] | None
    ) -> AbstractContextManager[Span]: ...

    def record(
        self, name: str, start_ns: int, attributes: Attributes, error: str | None
    ) -> None: ...

    def event(self, name: str, attributes: Attributes) -> None: ...

    def inject(self, headers: dict[str, str]) -> None: ...

    def ids(self) -> tuple[str, str] | None: ...


backend: Backend | None = None
_NOOP: AbstractContextManager[Span] = nullcontext(Span())


def enabled() -> bool:
    """True when spans are recorded (to skip work that only feeds them)."""
    return backend is not None


def span(
    name: str, attributes: Attributes | None = None, headers: Mapping[str, str] | None = None
) -> AbstractContextManager[Span]:
    """A span around a block, child of the current one, or of the W3C `traceparent` in
    `headers` when given; an exception leaving the block is recorded on it."""
    if backend is None:
        return _NOOP
    return backend.span(name, attributes or {}, headers)


def start() -> int:
    """A start time for `record` (0, and no clock read, when tracing is off)."""
    return 0 if backend is None else time.time_ns()


def record(
    name: str, start_ns: int, attributes: Attributes | None = None, error: str | None = None
) -> None:
    """A finished span, from `start_ns` (see `start`) to now, child of the current one."""
    if backend is not None and start_ns:
        backend.record(name, start_ns, attributes or {}, error)


def event(name: str, **attributes: str | int | float | bool) -> None:
    """An event on the current span (e.g. a retry)."""
    if backend is not None:
        backend.event(name, attributes)


def inject(headers: dict[str, str]) -> None:
    """Add the current span's `traceparent` to `headers` unless they carry one."""
    if backend is not None and "traceparent" not in headers:
        backend.inject(headers)


def ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current span, None outside one (for log lines)."""
    return None if backend is None else backend.ids()
