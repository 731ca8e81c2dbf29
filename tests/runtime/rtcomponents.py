"""Components for the runtime tests: they really hold state, and misbehave on request.

Every instance registers itself in `LIVE` until closed and appends what
happens to it to `EVENTS`, so tests can check ordering and leaks.  When
`events_file` is set, events are also appended there (for subprocess tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

LIVE: set[Store] = set()
EVENTS: list[tuple[str, str, str]] = []  # (what, component tag, detail)
_lock = threading.Lock()


def _record(what: str, tag: str, detail: str = "", events_file: str | None = None) -> None:
    with _lock:
        EVENTS.append((what, tag, detail))
    if events_file:
        with open(events_file, "a") as handle:
            handle.write(json.dumps([what, tag, detail, time.time()]) + "\n")


class Store:
    """A key-value store tagged with its provider; misbehaviour is configured by the plan."""

    def __init__(
        self,
        *,
        tag: str,
        activate_sleep_ms: int = 0,
        fail_activate: bool = False,
        unhealthy: bool = False,
        fail_probation: bool = False,
        fail_close: bool = False,
        health_sleep_ms: int = 0,
        close_sleep_ms: int = 0,
        events_file: str | None = None,
        sick_file: str | None = None,
        deps: Any = None,
    ) -> None:
        self.tag = tag
        self.events_file = events_file
        _record("activate", tag, events_file=events_file)
        if activate_sleep_ms:
            time.sleep(activate_sleep_ms / 1000)
        if fail_activate:
            raise RuntimeError(f"{tag} refuses to activate")
        self.data: dict[str, Any] = {}
        self.calls = 0
        self.calls_seen_by_health: list[int] = []
        self.inflight = 0
        self.inflight_at_close: int | None = None
        self.closed = False
        self.unhealthy = unhealthy
        self.fail_probation = fail_probation
        self.fail_close = fail_close
        self.health_sleep_ms = health_sleep_ms
        self.close_sleep_ms = close_sleep_ms
        self.sick_file = sick_file  # unhealthy while this file exists
        self.deps = deps
        with _lock:
            LIVE.add(self)

    def _enter(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self.tag} called after close")
        with _lock:
            self.calls += 1
            self.inflight += 1

    def _leave(self) -> None:
        with _lock:
            self.inflight -= 1

    def who(self) -> str:
        self._enter()
        self._leave()
        return self.tag

    def slow(self, seconds: float) -> str:
        self._enter()
        try:
            time.sleep(seconds)
            if self.closed:
                raise RuntimeError(f"{self.tag} closed during a call")
            return self.tag
        finally:
            self._leave()

    def set(self, key: str, value: Any) -> None:
        self._enter()
        self.data[key] = value
        self._leave()

    def get(self, key: str) -> Any:
        self._enter()
        try:
            return self.data.get(key)
        finally:
            self._leave()

    def via(self, component_id: str) -> str:
        """Call a dependency through the handle the runtime gave us."""
        self._enter()
        try:
            return f"{self.tag}->{self.deps[component_id].who()}"
        finally:
            self._leave()

    def health(self) -> bool:
        self.calls_seen_by_health.append(self.calls)
        if self.health_sleep_ms:
            time.sleep(self.health_sleep_ms / 1000)
        if self.unhealthy or (self.sick_file and os.path.exists(self.sick_file)):
            return False
        # Probation is the second check: healthy while warming, failing once bound.
        return not (self.fail_probation and len(self.calls_seen_by_health) > 1)

    def close(self) -> None:
        if self.close_sleep_ms:
            time.sleep(self.close_sleep_ms / 1000)
        self.inflight_at_close = self.inflight
        self.closed = True
        with _lock:
            LIVE.discard(self)
        _record("close", self.tag, events_file=self.events_file)
        if self.fail_close:
            raise RuntimeError(f"{self.tag} fails to close")


def stamp(value: str, *, suffix: str = "") -> str:
    """A function component (task-like): config is bound as keyword arguments."""
    return value + suffix


class Noop:
    """The cheapest possible component, for the benchmarks."""

    def __init__(self, **_: Any) -> None:
        pass


def busy_app(supervisor: Any) -> None:
    """`oneiric run --app`: three threads keep slow calls in flight until shutdown.

    Outcomes go to $RT_EVENTS as ("call", provider or error type, ...).
    """
    import os

    events = os.environ["RT_EVENTS"]

    def loop() -> None:
        while not supervisor.stopping.is_set():
            try:
                tag = supervisor.handle("adapter:cache").slow(0.4)
                _record("call", tag, events_file=events)
            except Exception as exc:
                _record("call", type(exc).__name__, str(exc), events_file=events)
                time.sleep(0.05)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def metered_app(supervisor: Any) -> None:
    """`oneiric run --app`: 7 calls that succeed and 3 that fail, then idle until shutdown.

    Records ("metered", "done") in $RT_EVENTS once the calls are made.
    """
    cache = supervisor.handle("adapter:cache")
    for _ in range(7):
        cache.who()
    for _ in range(3):
        with contextlib.suppress(AttributeError):
            cache.no_such_method()
    _record("metered", "done", events_file=os.environ["RT_EVENTS"])
    supervisor.stopping.wait()


def modules_app(supervisor: Any) -> None:
    """`oneiric run --app`: record ("modules", [top-level modules imported]) in $RT_EVENTS."""
    import sys

    names = sorted({name.split(".")[0] for name in sys.modules} | set(sys.modules))
    _record("modules", json.dumps(names), events_file=os.environ["RT_EVENTS"])
    supervisor.stopping.wait()
