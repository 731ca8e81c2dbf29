"""Handles: how application code reaches a component whose instance may be swapped live.

A `Handle` is stable for the life of the runtime; what it points to is a
`Slot` (one instance of one generation).  A call enters the current slot,
counting itself in flight, and leaves it when done (for a coroutine: when it
has been awaited).  Binding a new slot is one attribute assignment, so a
caller sees the old instance or the new one, never none.  The old slot is
then retired: it admits no new call (a late caller retries on the new slot),
and `wait_idle` lets the runtime wait for its in-flight calls to finish
before the instance is cleaned up.

Thread-safe and usable from async code: entering and leaving take a short
lock and never block on I/O.

Typed access: `runtime.handle("adapter:cache", Cache)` is a `Handle[Cache]`
whose `api` is typed `Cache` (mypy and pyright check the calls) and forwards
every attribute to the current instance, with nothing of its own, so a
component's `id`, `provider` or `use` method is never shadowed by the
handle's.  The handle's own state stays on the handle (`id`, `provider`,
`generation`, `paused`).  `handle.method(...)` keeps working untyped for the
names the handle does not define itself.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class ComponentUnavailable(RuntimeError):
    """No instance is bound to the component (not started, removed, or runtime stopped)."""


class ComponentPaused(ComponentUnavailable):
    """The component is paused or drained by an operator; it takes no new calls."""


class Slot:
    """One bound instance and its in-flight accounting."""

    __slots__ = (
        "_cond",
        "_inflight",
        "_retired",
        "calls",
        "errors",
        "generation",
        "instance",
        "provider",
    )

    def __init__(self, instance: Any, provider: str, generation: int) -> None:
        self.instance = instance
        self.provider = provider
        self.generation = generation
        self.calls = 0
        self.errors = 0  # calls that raised (counted when they leave)
        self._inflight = 0
        self._retired = False
        self._cond = threading.Condition(threading.Lock())

    @property
    def inflight(self) -> int:
        return self._inflight

    def enter(self) -> bool:
        with self._cond:
            if self._retired:
                return False
            self._inflight += 1
            self.calls += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()

    def fail(self) -> None:
        """`leave` for a call that raised."""
        with self._cond:
            self.errors += 1
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()

    def retire(self) -> None:
        with self._cond:
            self._retired = True

    def wait_idle(self, timeout: float) -> int:
        """Wait for in-flight calls to finish, at most `timeout` s; return those still running."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._inflight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._inflight


class Handle(Generic[T]):
    """The application's reference to a component: `handle.api.method(...)` (typed `T`),
    `handle.method(...)`, `handle(...)`, `use()`."""

    __slots__ = ("_changed", "_past", "_paused", "_retired", "_slot", "id")

    def __init__(self, component_id: str) -> None:
        self.id = component_id
        self._slot: Slot | None = None
        self._paused = False
        self._changed = threading.Condition(threading.Lock())  # bound or (un)paused
        self._past = (0, 0)  # calls and errors of retired slots that have drained
        self._retired: list[Slot] = []  # retired slots that may still have calls in flight

    @property
    def paused(self) -> bool:
        """Paused or drained by an operator: calls raise `ComponentPaused`."""
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        with self._changed:
            self._paused = value
            self._changed.notify_all()

    # -- for the runtime -----------------------------------------------------
    @property
    def slot(self) -> Slot | None:
        return self._slot

    def bind(self, slot: Slot | None) -> Slot | None:
        """Point the handle at `slot` (atomically) and retire the previous one, returned."""
        old = self._slot
        with self._changed:
            self._slot = slot
            self._changed.notify_all()
        if old is not None:
            old.retire()
            self._retired.append(old)
        return old

    def counts(self) -> tuple[int, int, int]:
        """Calls, failed calls (over every instance this handle has pointed to) and calls
        in flight now (metrics)."""
        calls, errors = self._past
        draining = []
        for slot in self._retired:
            if slot.inflight:
                draining.append(slot)
            else:  # no call can enter a retired slot, and none is left to fail: final
                calls, errors = calls + slot.calls, errors + slot.errors
        self._past, self._retired = (calls, errors), draining
        live = [*draining, self._slot] if self._slot is not None else draining
        return (
            calls + sum(s.calls for s in live),
            errors + sum(s.errors for s in live),
            sum(s.inflight for s in live),
        )

    # -- for application code ------------------------------------------------
    @property
    def provider(self) -> str | None:
        slot = self._slot
        return slot.provider if slot is not None else None

    @property
    def generation(self) -> int | None:
        slot = self._slot
        return slot.generation if slot is not None else None

    @property
    def ready(self) -> bool:
        """An instance is bound and the component is not paused: a call would be taken."""
        return self._slot is not None and not self._paused

    @property
    def api(self) -> T:
        """The component, typed `T`: every attribute is the current instance's, each call
        counted in flight (as `handle.method(...)`); nothing of the handle's shadows it."""
        return cast(T, _Api(self))

    def wait_ready(self, timeout: float) -> None:
        """Block until the component takes calls (bound and not paused), at most `timeout` s.

        Raises `ComponentPaused` (or `ComponentUnavailable`) when it still does not.
        For threads and sync code; async code awaits `until_ready`.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.ready:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
        if not self.ready:
            self._refuse()

    async def until_ready(self, timeout: float, poll_s: float = 0.01) -> None:
        """`wait_ready` for async code: waits without blocking the event loop."""
        import anyio

        with anyio.move_on_after(timeout):
            while not self.ready:
                await anyio.sleep(poll_s)
        if not self.ready:
            self._refuse()

    def _refuse(self) -> None:
        if self._paused:
            raise ComponentPaused(f"{self.id} is paused")
        raise ComponentUnavailable(f"{self.id} has no bound instance")

    def _acquire(self) -> Slot:
        while True:
            if self.paused:
                raise ComponentPaused(f"{self.id} is paused")
            slot = self._slot
            if slot is None:
                raise ComponentUnavailable(f"{self.id} has no bound instance")
            if slot.enter():
                return slot
            # Retired between the read and the enter: the new slot is already bound.

    @contextmanager
    def use(self) -> Iterator[Any]:
        """Hold one instance for several calls; the swap waits for the block to end."""
        slot = self._acquire()
        try:
            yield slot.instance
        except BaseException:
            slot.fail()
            raise
        slot.leave()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        slot = self._acquire()
        return _tracked(slot, slot.instance, args, kwargs)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        return _method(self, name)

    def __repr__(self) -> str:
        return f"<Handle {self.id} → {self.provider} gen {self.generation}>"


class _Api:
    """`Handle.api`: forwards every attribute to the handle's current instance."""

    __slots__ = ("_oneiric_handle",)
    _oneiric_handle: Handle[Any]

    def __init__(self, handle: Handle[Any]) -> None:
        object.__setattr__(self, "_oneiric_handle", handle)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        return _method(self._oneiric_handle, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._oneiric_handle(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<api of {self._oneiric_handle!r}>"


def _method(handle: Handle[Any], name: str) -> Callable[..., Any]:
    """A callable that calls `name` on the instance bound when it is called."""

    def call(*args: Any, **kwargs: Any) -> Any:
        slot = handle._acquire()
        try:
            method = getattr(slot.instance, name)
        except BaseException:
            slot.fail()
            raise
        return _tracked(slot, method, args, kwargs)

    call.__name__ = name
    return call


def _tracked(slot: Slot, target: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    try:
        result = target(*args, **kwargs)
    except BaseException:
        slot.fail()
        raise
    if inspect.isawaitable(result):
        return _awaited(slot, result)
    slot.leave()
    return result


async def _awaited(slot: Slot, awaitable: Any) -> Any:
    try:
        result = await awaitable
    except BaseException:
        slot.fail()
        raise
    slot.leave()
    return result
