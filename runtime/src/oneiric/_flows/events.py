"""Events: routed by topic and the plan's compiled filters to handler components.

`await bus.emit(topic, payload, headers)` delivers one event and returns a
`Delivery` saying what each handler did.  Routing follows the plan's
`routes`: the handlers of the topic, highest priority first, keep those whose
subscription filter matches the event document `{"topic", "payload",
"headers"}`; a `broadcast` route delivers to all of them concurrently, an
`exclusive` route to the first one only.

Each delivery to a handler is isolated: attempts and backoff come from the
subscription's `retry` (else the component's, else one attempt), each attempt
is bounded by the bus's handler timeout, and an exception or a timeout is
caught, so a failing or hanging handler never aborts or blocks its siblings.
A subscription's `concurrency` caps how many calls of that handler run at
once, across all events of this bus.  A delivery that exhausts its attempts
is written to the dead-letter table (`oneiric._flows.store`) with the event and
the last error; `replay` delivers it again to the same handler.

How it runs on asyncio: each delivery of a broadcast is a task of its own,
started eagerly (`oneiric._flows.eager`): the first attempt's call runs at
once, as that task's first step (its own current task, a copy of the
emitter's context), and an async handler that returns without suspending
costs no task scheduling and no timer; one that suspends goes on in that task,
its timeout counted from the attempt's start.  Under trio, anyio tasks and
cancel scopes.  Event ids are 128 random bits in hex unless given.

A handler is called as `handler(event)` with an `Event`; sync handlers run in
a worker thread.  `await event.start_workflow(name)` starts a workflow run
from a handler (the built-in handler `oneiric.events:start_workflow` does
exactly that, with `config { workflow = "NAME" }`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import operator
import os
import random
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from oneiric import _trace
from oneiric._flows import eager
from oneiric._flows.host import lookup
from oneiric._flows.store import DeadLetter, FlowStore
from oneiric._flows.workflows import (
    DEFAULT_BACKOFF_MS,
    Workflows,
    _async,
    _call,
    backoff_s,
    to_json,
)
from oneiric._lifecycle.handle import Handle, Slot
from oneiric._lifecycle.runtime import Runtime
from oneiric._plan.model import Component, Plan, Retry, Route

DEFAULT_HANDLER_TIMEOUT_S = 30.0
_MISSING = object()


class DeliveryObserver:
    """Told of this process's deliveries (`oneiric run --http` counts them); no-ops here.

    Registered in `OBSERVERS`; with none registered a delivery pays one empty loop.
    Called on the delivering task's thread; must not block or raise.
    """

    def retried(self, topic: str, handler: str) -> None:
        """An attempt failed and another is scheduled."""

    def delivered(self, topic: str, handler: str, outcome: Outcome) -> None:
        """A delivery to one handler finished (delivered or dead-lettered)."""


OBSERVERS: list[DeliveryObserver] = []


class EventError(Exception):
    """The event cannot be delivered as asked (unknown topic, bad payload, unknown letter)."""


def _read_only(slot: str) -> Any:
    """A read-only attribute: the value of `slot`."""
    return property(operator.attrgetter(slot))


class Event:
    """What a handler receives: `id`, `topic`, `payload`, `headers`, `emitted_at`, `attempt`.

    Read-only.  `payload` and `headers` are decoded afresh per handler (and per
    attempt) on first read, so handlers never see each other's changes.
    """

    __slots__ = (
        "_attempt",
        "_emitted_at",
        "_headers",
        "_id",
        "_payload",
        "_payload_json",
        "_source_headers",
        "_topic",
        "_workflows",
    )

    def __init__(
        self,
        id: str,
        topic: str,
        payload_json: str,
        headers: Mapping[str, str],
        emitted_at: float,
        attempt: int = 1,
        workflows: Workflows | None = None,
    ) -> None:
        self._id = id
        self._topic = topic
        self._payload_json = payload_json
        self._payload: Any = _MISSING
        self._source_headers = headers
        self._headers: dict[str, str] | None = None
        self._emitted_at = emitted_at
        self._attempt = attempt
        self._workflows = workflows

    id: str = _read_only("_id")
    topic: str = _read_only("_topic")
    emitted_at: float = _read_only("_emitted_at")
    attempt: int = _read_only("_attempt")

    @property
    def payload(self) -> Any:
        if self._payload is _MISSING:
            self._payload = json.loads(self._payload_json)
        return self._payload

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = dict(self._source_headers)
        return self._headers

    def __repr__(self) -> str:
        return (
            f"Event(id={self.id!r}, topic={self.topic!r}, payload={self.payload!r}, "
            f"headers={self.headers!r}, emitted_at={self.emitted_at!r}, attempt={self.attempt!r})"
        )

    def document(self) -> dict[str, Any]:
        """What filters see."""
        return {"topic": self.topic, "payload": self.payload, "headers": self.headers}

    async def start_workflow(self, name: str, input: Any = _MISSING) -> str:
        """Start workflow `name` (input: this event's payload by default); return the run id.

        The run id is derived from the event id, so a redelivered event does not
        start the workflow twice.
        """
        if self._workflows is None:
            raise RuntimeError("this event bus has no workflows to start")
        return await self._workflows.start(
            name,
            self.payload if input is _MISSING else input,
            run_id=f"{name}-{self.id}",
            trigger=f"event:{self.topic}:{self.id}",
        )


async def start_workflow(event: Event, workflow: str) -> dict[str, str]:
    """Built-in handler: start `workflow` with the event's payload as input."""
    return {"run": await event.start_workflow(workflow)}


def find_route(plan: Plan, topic: str) -> Route:
    """The plan's route for `topic`; `flowhost.Unknown` naming the known topics otherwise."""
    return lookup({r.topic: r for r in plan.routes}, topic, "handler subscribed to topic")


# -- filters ------------------------------------------------------------------------------
def matches(expr: Mapping[str, Any] | None, document: Mapping[str, Any]) -> bool:
    """Evaluate a compiled filter.  A missing path or mismatched types make a test false."""
    if expr is None:
        return True
    if "and" in expr:
        return all(matches(e, document) for e in expr["and"])
    if "or" in expr:
        return any(matches(e, document) for e in expr["or"])
    if "not" in expr:
        return not matches(expr["not"], document)
    if "exists" in expr:
        return _lookup(document, expr["exists"]) is not _MISSING
    found = _lookup(document, expr["path"])
    if found is _MISSING:
        return False
    op, value = expr["op"], expr["value"]
    if op == "==":
        return _equal(found, value)
    if op == "!=":
        return not _equal(found, value)
    if op == "in":
        return any(_equal(found, v) for v in value)
    if op == "not in":
        return not any(_equal(found, v) for v in value)
    if not _comparable(found, value):
        return False
    if op == "<":
        return bool(found < value)
    if op == "<=":
        return bool(found <= value)
    if op == ">":
        return bool(found > value)
    if op == ">=":
        return bool(found >= value)
    raise ValueError(f"unknown filter operator {op!r}")


def _lookup(document: Any, path: list[Any]) -> Any:
    current = document
    for part in path:
        if (isinstance(current, Mapping) and part in current) or (
            isinstance(current, list)
            and isinstance(part, int)
            and -len(current) <= part < len(current)
        ):
            current = current[part]
        else:
            return _MISSING
    return current


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str)
    )


# -- delivery -------------------------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    handler: str  # event key
    status: str  # 'delivered' | 'dead-lettered'
    attempts: int
    error: str | None = None
    result: Any = None
    dead_letter: int | str | None = None
    ms: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "handler": self.handler,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "result": self.result,
            "dead_letter": self.dead_letter,
            "ms": round(self.ms, 3),
        }


@dataclass
class Delivery:
    event_id: str
    topic: str
    fanout: str
    matched: list[str]
    skipped: list[str]  # handlers whose filter did not match (or not first, exclusive)
    outcomes: list[Outcome]

    @property
    def ok(self) -> bool:
        return all(o.status == "delivered" for o in self.outcomes)

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "topic": self.topic,
            "fanout": self.fanout,
            "matched": self.matched,
            "skipped": self.skipped,
            "ok": self.ok,
            "outcomes": [o.as_json() for o in self.outcomes],
        }


@dataclass(slots=True)
class _Handler:
    """What delivering to one handler needs, looked up once per bus."""

    component: Component
    handle: Handle[Any]
    attempts: int
    backoff_ms: int
    limiter: anyio.CapacityLimiter | None  # the subscription's concurrency, across events
    slot: Slot | None = None  # the handle's slot last seen, and whether its instance is async
    is_async: bool = False


class _Expired(Exception):
    """The handler timeout ran out (a handler's own `TimeoutError` is an error like others)."""


class EventBus:
    """Delivers events to the plan's handler components running on a `Runtime`."""

    def __init__(
        self,
        plan: Plan,
        runtime: Runtime,
        store: FlowStore,
        *,
        workflows: Workflows | None = None,
        handler_timeout_s: float = DEFAULT_HANDLER_TIMEOUT_S,
        rng: random.Random | None = None,
    ) -> None:
        self.plan = plan
        self.runtime = runtime
        self.store = store
        self.workflows = workflows
        self.handler_timeout_s = handler_timeout_s
        self._handlers: dict[str, _Handler] = {}
        self._components: dict[str, Component] = {}
        self._routes: dict[str, Route] = {r.topic: r for r in plan.routes}
        # topic: (matched, skipped) when no handler of its route has a filter, else None
        self._unfiltered: dict[str, tuple[list[str], list[str]] | None] = {}
        self._rng = rng or random.Random()
        self._starter = eager.Starter()
        self._log = structlog.get_logger("oneiric.events").bind(plan=plan.digest)
        # The bound logger's level is fixed: skip building the per-event debug line.
        enabled = getattr(self._log, "is_enabled_for", None)
        self._debug = enabled is None or bool(enabled(logging.DEBUG))

    @staticmethod
    def handler_ids(plan: Plan, topic: str | None = None) -> list[str]:
        """Event components of a topic's route (all routes by default)."""
        return sorted(
            {
                f"event:{key}"
                for route in plan.routes
                if topic is None or route.topic == topic
                for key in route.handlers
            }
        )

    def route(self, topic: str) -> Route:
        found = self._routes.get(topic)
        return found if found is not None else find_route(self.plan, topic)

    def select(
        self, route: Route, document: Mapping[str, Any], handlers: list[str] | None = None
    ) -> tuple[list[str], list[str]]:
        """(matched, skipped) among `handlers` (the route's by default), by priority.

        Exclusive: only the first match; broadcast: every match.
        """
        matched: list[str] = []
        skipped: list[str] = []
        exclusive = route.fanout == "exclusive"
        for key in route.handlers if handlers is None else handlers:
            sub = self._component(key).subscription
            if not (exclusive and matched) and (
                sub is None or sub.filter is None or matches(sub.filter, document)
            ):
                matched.append(key)
            else:
                skipped.append(key)
        return matched, skipped

    async def emit(
        self,
        topic: str,
        payload: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        event_id: str | None = None,
    ) -> Delivery:
        """Deliver one event to its matching handlers; never raises for a handler's failure."""
        route = self.route(topic)
        payload_json = to_json(payload, "the event payload")
        header_map = {str(k): str(v) for k, v in headers.items()} if headers else {}
        _trace.inject(header_map)  # emitted inside a span (a node, a handler): same trace
        eid = event_id or os.urandom(16).hex()
        matched, skipped = self._selection(route, payload_json, header_map)
        emitted_at = time.time()
        if len(matched) == 1:  # the common case: no task group needed
            outcomes = [
                await self.deliver(
                    matched[0], eid, topic, payload_json, header_map, emitted_at=emitted_at
                )
            ]
        elif (loop := _asyncio_loop()) is not None:  # own tasks, started eagerly (`eager`)
            outcomes = await self._starter.map(  # never raises for a handler's failure
                functools.partial(
                    self._start, loop, eid, topic, payload_json, header_map, emitted_at
                ),
                matched,
            )
        else:
            found: dict[str, Outcome] = {}

            async def deliver(key: str) -> None:
                found[key] = await self.deliver(
                    key, eid, topic, payload_json, header_map, emitted_at=emitted_at
                )

            async with anyio.create_task_group() as group:
                for key in matched:
                    group.start_soon(deliver, key)
            outcomes = [found[k] for k in matched]
        delivery = Delivery(eid, topic, route.fanout, matched, skipped, outcomes)
        if self._debug:
            self._log.debug(
                "event delivered",
                event_id=eid,
                topic=topic,
                handlers=matched,
                ok=delivery.ok,
                ms=round((time.time() - emitted_at) * 1000, 3),
            )
        return delivery

    def _selection(
        self, route: Route, payload_json: str, headers: dict[str, str]
    ) -> tuple[list[str], list[str]]:
        """`select` for one event; the same for every event of a route without filters."""
        if route.topic not in self._unfiltered:
            filtered = any(
                (sub := self._component(key).subscription) is not None and sub.filter is not None
                for key in route.handlers
            )
            self._unfiltered[route.topic] = None if filtered else self.select(route, {})
        fixed = self._unfiltered[route.topic]
        if fixed is None:
            payload = json.loads(payload_json)
            return self.select(
                route, {"topic": route.topic, "payload": payload, "headers": headers}
            )
        matched, skipped = fixed
        return list(matched), list(skipped)

    async def replay(self, letter_id: int) -> tuple[DeadLetter, Outcome]:
        """Deliver a dead letter again to its handler; resolve it on success."""
        letter = self.store.dead_letter(letter_id)
        if letter is None:
            raise EventError(f"no dead letter {letter_id}")
        outcome = await self.redeliver(letter)
        self.store.replayed(letter_id, outcome.error, outcome.attempts)
        return letter, outcome

    async def redeliver(self, letter: DeadLetter) -> Outcome:
        """Deliver a dead letter (from any store) again to its handler, with its retries."""
        if letter.resolved_at is not None:
            raise EventError(f"dead letter {letter.id} was already replayed successfully")
        if f"event:{letter.handler}" not in self.runtime.handles:
            raise EventError(
                f'dead letter {letter.id}: handler "{letter.handler}" is not in the plan'
            )
        return await self.deliver(
            letter.handler,
            letter.event_id,
            letter.topic,
            json.dumps(letter.payload, sort_keys=True),
            letter.headers,
            record=None,
        )

    def _component(self, key: str) -> Component:
        component = self._components.get(key)
        if component is None:
            component = self.plan.component(f"event:{key}")
            if component is None:
                raise EventError(f'route handler "{key}" is not an event component of the plan')
            self._components[key] = component
        return component

    def _handler(self, key: str) -> _Handler:
        found = self._handlers.get(key)
        if found is None:
            component = self._component(key)
            sub = component.subscription
            retry: Retry | None = (sub.retry if sub else None) or component.retry
            concurrency = (sub.concurrency if sub else None) or component.concurrency
            found = self._handlers[key] = _Handler(
                component,
                self.runtime.handle(component.id),
                max(1, retry.attempts) if retry else 1,
                (retry.backoff_ms if retry else None) or DEFAULT_BACKOFF_MS,
                anyio.CapacityLimiter(concurrency) if concurrency and concurrency >= 1 else None,
            )
        return found

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        event_id: str,
        topic: str,
        payload_json: str,
        headers: dict[str, str],
        emitted_at: float,
        key: str,
    ) -> Outcome | eager.Later[Outcome]:
        """`deliver` with its first attempt begun at once (`eager`): the outcome when that
        attempt returned without suspending, else the rest of the delivery to wait for."""
        handler = self._handler(key)
        if handler.limiter is not None or _trace.enabled():  # no shortcut: all of it later
            return eager.Later(
                self.deliver(key, event_id, topic, payload_json, headers, emitted_at=emitted_at)
            )
        started = time.perf_counter()
        event = Event(event_id, topic, payload_json, headers, emitted_at, 1, self.workflows)
        first: Awaitable[Any] | Exception
        try:
            finished, first = self._begin(handler, event, loop)
        except Exception as exc:
            first = exc
        else:
            if finished:
                return self._delivered(key, topic, 1, first, started)
        return eager.Later(
            self._deliver(
                key,
                event_id,
                topic,
                payload_json,
                headers,
                emitted_at=emitted_at,
                first=first,
                started=started,
            )
        )

    @staticmethod
    def _delivered(key: str, topic: str, attempt: int, result: Any, started: float) -> Outcome:
        ms = (time.perf_counter() - started) * 1000
        # handler, status, attempts, error, result, dead_letter, ms (positional: cheaper)
        outcome = Outcome(key, "delivered", attempt, None, _jsonable(result), None, ms)
        for observer in OBSERVERS:
            observer.delivered(topic, key, outcome)
        return outcome

    def deliver(
        self,
        key: str,
        event_id: str,
        topic: str,
        payload_json: str,
        headers: dict[str, str],
        **options: Any,
    ) -> Coroutine[Any, Any, Outcome]:
        """One event to one handler (`_deliver`): in a span, child of the event's W3C
        `traceparent` header if it has one, when tracing is on."""
        delivery = self._deliver(key, event_id, topic, payload_json, headers, **options)
        if not _trace.enabled():
            return delivery
        return _traced(
            delivery,
            {"oneiric.topic": topic, "oneiric.handler": key, "oneiric.event": event_id},
            headers,
        )

    async def _deliver(
        self,
        key: str,
        event_id: str,
        topic: str,
        payload_json: str,
        headers: dict[str, str],
        *,
        emitted_at: float | None = None,
        count: Callable[[], Awaitable[int]] | None = None,
        done: int = 0,
        record: Callable[[str, int], Awaitable[int | str | None]] | bool | None = True,
        first: Awaitable[Any] | Exception | None = None,
        started: float | None = None,
    ) -> Outcome:
        """One event to one handler, with its retries, timeout and concurrency limit;
        `OBSERVERS` are told of the outcome.

        `count()` (another transport's attempt counter, shared across processes)
        numbers each attempt; `done` attempts were made before (elsewhere).
        Exhausted: `record(error, attempts)` files the dead letter (True: this
        bus's store; None: nobody, as for a replay).  `first`: the first attempt,
        begun by `_start` at `started` (the rest of it, or what its first step raised).
        """
        handler = self._handler(key)
        attempts = handler.attempts
        started = time.perf_counter() if started is None else started
        loop = _asyncio_loop()
        error = ""
        emitted_at = time.time() if emitted_at is None else emitted_at
        attempt = done
        while attempt < attempts:
            attempt = await count() if count is not None else attempt + 1
            if attempt > attempts:
                break
            try:
                if first is not None:  # attempt 1, begun by `_start`
                    begun, first = first, None
                    if isinstance(begun, Exception):
                        raise begun
                    result = await begun
                else:
                    event = Event(
                        event_id, topic, payload_json, headers, emitted_at, attempt, self.workflows
                    )
                    if handler.limiter is None:
                        finished, result = self._begin(handler, event, loop)
                        if not finished:
                            result = await result
                    else:
                        async with handler.limiter:
                            finished, result = self._begin(handler, event, loop)
                            if not finished:
                                result = await result
            except _Expired:
                error = f"timed out after {self.handler_timeout_s:g}s"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                return self._delivered(key, topic, attempt, result, started)
            if attempt < attempts:
                delay = backoff_s(handler.backoff_ms, attempt, self._rng)
                self._log.warning(
                    "handler attempt failed",
                    event_id=event_id,
                    topic=topic,
                    handler=handler.component.id,
                    attempt=attempt,
                    error=error,
                    retry_in_s=delay,
                )
                _trace.event("retry", attempt=attempt, error=error, retry_in_s=delay)
                for observer in OBSERVERS:
                    observer.retried(topic, key)
                await anyio.sleep(delay)
        error = error or f"its {attempts} attempt(s) were used up by consumers that stopped"
        if record is True:
            letter: int | str | None = self.store.add_dead_letter(
                event_id, topic, key, payload_json, headers, error, attempts
            )
        else:
            letter = await record(error, attempts) if record else None
        self._log.error(
            "handler exhausted",
            event_id=event_id,
            topic=topic,
            handler=handler.component.id,
            attempts=attempts,
            error=error,
            dead_letter=letter,
        )
        outcome = Outcome(
            key,
            "dead-lettered",
            attempts,
            error=error,
            dead_letter=letter,
            ms=(time.perf_counter() - started) * 1000,
        )
        for observer in OBSERVERS:
            observer.delivered(topic, key, outcome)
        return outcome

    def _begin(
        self, handler: _Handler, event: Event, loop: asyncio.AbstractEventLoop | None
    ) -> tuple[bool, Any]:
        """Call the handler: (True, its result) when it returned without suspending, else
        (False, an awaitable of the rest, within the handler timeout: `_Expired` past it).

        On asyncio an async handler's first step runs before any timer is set: one
        that returns without suspending costs none (no timeout can fire before a
        suspension anyway); one that suspends goes on in this same task under
        `asyncio.timeout_at` from the attempt's start.
        """
        handle = handler.handle
        if loop is None:  # trio: an anyio cancel scope
            return False, _within_scope(_call(handle, event), self.handler_timeout_s)
        slot = handle.slot
        if slot is not handler.slot:  # first call, or swapped since
            handler.slot, handler.is_async = slot, slot is not None and _async(slot.instance)
        if not handler.is_async:  # a worker thread (or the call refuses: nothing bound)
            return False, _within(_call(handle, event), asyncio.timeout(self.handler_timeout_s))
        deadline = loop.time() + self.handler_timeout_s
        call = handle(event)
        if type(call) is not types.CoroutineType:  # swapped to a sync instance since read
            return False, _within(call, asyncio.timeout_at(deadline))  # awaited, as before
        try:
            step = call.send(None)
        except StopIteration as stop:
            return True, stop.value
        return False, _within(eager.resume(call, step), asyncio.timeout_at(deadline))


async def _within(pending: Awaitable[Any], deadline: asyncio.Timeout) -> Any:
    try:
        async with deadline:
            result = await pending
    except TimeoutError:
        if deadline.expired():
            raise _Expired from None
        raise
    if deadline.expired():  # the handler swallowed the cancellation
        raise _Expired
    return result


async def _within_scope(pending: Awaitable[Any], timeout_s: float) -> Any:
    with anyio.move_on_after(timeout_s) as scope:
        result = await pending
    if scope.cancelled_caught:
        raise _Expired
    return result


async def _traced(
    delivery: Awaitable[Outcome], attributes: _trace.Attributes, headers: dict[str, str]
) -> Outcome:
    with _trace.span("oneiric.event.deliver", attributes, headers) as span:
        outcome = await delivery
        span.set("oneiric.outcome", outcome.status)
        span.set("oneiric.attempts", outcome.attempts)
        if outcome.error:
            span.fail(outcome.error)
        return outcome


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop; None under another anyio backend (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_SCALARS = (str, int, float, bool)


def _jsonable(value: Any) -> Any:
    """A handler's return value as JSON data (its repr when it is not)."""
    if value is None or type(value) in _SCALARS:
        return value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
