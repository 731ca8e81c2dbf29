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

A handler is called as `handler(event)` with an `Event`; sync handlers run in
a worker thread.  `await event.start_workflow(name)` starts a workflow run
from a handler (the built-in handler `oneiric.events:start_workflow` does
exactly that, with `config { workflow = "NAME" }`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from oneiric import _trace
from oneiric._flows.host import lookup
from oneiric._flows.store import DeadLetter, FlowStore
from oneiric._flows.workflows import DEFAULT_BACKOFF_MS, Workflows, _call, backoff_s, to_json
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


@dataclass(frozen=True)
class Event:
    """What a handler receives.  `payload` and `headers` are decoded afresh per handler."""

    id: str
    topic: str
    payload: Any
    headers: dict[str, str]
    emitted_at: float
    attempt: int = 1
    _workflows: Workflows | None = field(default=None, repr=False, compare=False)

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
@dataclass
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
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._components: dict[str, Component] = {}
        self._routes: dict[str, Route] = {r.topic: r for r in plan.routes}
        self._rng = rng or random.Random()
        self._log = structlog.get_logger("oneiric.events").bind(plan=plan.digest)

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
        header_map = {str(k): str(v) for k, v in (headers or {}).items()}
        _trace.inject(header_map)  # emitted inside a span (a node, a handler): same trace
        eid = event_id or uuid.uuid4().hex
        document = {"topic": topic, "payload": json.loads(payload_json), "headers": header_map}
        matched, skipped = self.select(route, document)
        started = time.time()
        if len(matched) == 1:  # the common case: no task group needed
            outcomes = [await self.deliver(matched[0], eid, topic, payload_json, header_map)]
        elif _asyncio_loop() is not None:  # plain asyncio tasks cost a fraction of anyio's
            outcomes = await _gather(
                [self.deliver(key, eid, topic, payload_json, header_map) for key in matched]
            )
        else:
            found: dict[str, Outcome] = {}

            async def deliver(key: str) -> None:
                found[key] = await self.deliver(key, eid, topic, payload_json, header_map)

            async with anyio.create_task_group() as group:
                for key in matched:
                    group.start_soon(deliver, key)
            outcomes = [found[k] for k in matched]
        delivery = Delivery(eid, topic, route.fanout, matched, skipped, outcomes)
        self._log.debug(
            "event delivered",
            event_id=eid,
            topic=topic,
            handlers=matched,
            ok=delivery.ok,
            ms=round((time.time() - started) * 1000, 3),
        )
        return delivery

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

    async def deliver(
        self,
        key: str,
        event_id: str,
        topic: str,
        payload_json: str,
        headers: dict[str, str],
        **options: Any,
    ) -> Outcome:
        """`_deliver` in a span, child of the event's W3C `traceparent` header if it has one."""
        if not _trace.enabled():
            outcome = await self._deliver(
                _NO_SPAN, key, event_id, topic, payload_json, headers, **options
            )
            for observer in OBSERVERS:
                observer.delivered(topic, key, outcome)
            return outcome
        attributes = {"oneiric.topic": topic, "oneiric.handler": key, "oneiric.event": event_id}
        with _trace.span("oneiric.event.deliver", attributes, headers) as span:
            outcome = await self._deliver(
                span, key, event_id, topic, payload_json, headers, **options
            )
            span.set("oneiric.outcome", outcome.status)
            for observer in OBSERVERS:
                observer.delivered(topic, key, outcome)
            span.set("oneiric.attempts", outcome.attempts)
            if outcome.error:
                span.fail(outcome.error)
            return outcome

    async def _deliver(
        self,
        span: _trace.Span,
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
    ) -> Outcome:
        """One event to one handler, with its retries, timeout and concurrency limit.

        `count()` (another transport's attempt counter, shared across processes)
        numbers each attempt; `done` attempts were made before (elsewhere).
        Exhausted: `record(error, attempts)` files the dead letter (True: this
        bus's store; None: nobody, as for a replay).
        """
        component = self._component(key)
        sub = component.subscription
        retry: Retry | None = (sub.retry if sub else None) or component.retry
        attempts = max(1, retry.attempts) if retry else 1
        backoff_ms = (retry.backoff_ms if retry else None) or DEFAULT_BACKOFF_MS
        concurrency = (sub.concurrency if sub else None) or component.concurrency
        limiter = self._limiter(key, concurrency)
        handle = self.runtime.handle(component.id)
        started = time.perf_counter()
        error = ""
        native = _asyncio_loop() is not None
        emitted_at = time.time() if emitted_at is None else emitted_at
        attempt = done
        while attempt < attempts:
            attempt = await count() if count is not None else attempt + 1
            if attempt > attempts:
                break
            event = Event(
                event_id,
                topic,
                json.loads(payload_json),
                dict(headers),
                emitted_at,
                attempt,
                self.workflows,
            )
            # On asyncio, `asyncio.timeout` bounds the attempt: one timer, no anyio cancel scope.
            deadline = (
                asyncio.timeout(self.handler_timeout_s)
                if native
                else anyio.move_on_after(self.handler_timeout_s)
            )
            try:
                async with limiter or _NO_LIMIT:
                    if isinstance(deadline, asyncio.Timeout):
                        async with deadline:
                            result = await _call(handle, event)
                    else:
                        with deadline:
                            result = await _call(handle, event)
                if not _expired(deadline):
                    return Outcome(
                        key,
                        "delivered",
                        attempt,
                        result=_jsonable(result),
                        ms=(time.perf_counter() - started) * 1000,
                    )
                error = f"timed out after {self.handler_timeout_s:g}s"
            except Exception as exc:
                if isinstance(exc, TimeoutError) and _expired(deadline):
                    error = f"timed out after {self.handler_timeout_s:g}s"
                else:
                    error = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                delay = backoff_s(backoff_ms, attempt, self._rng)
                self._log.warning(
                    "handler attempt failed",
                    event_id=event_id,
                    topic=topic,
                    handler=component.id,
                    attempt=attempt,
                    error=error,
                    retry_in_s=delay,
                )
                span.event("retry", attempt=attempt, error=error, retry_in_s=delay)
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
            handler=component.id,
            attempts=attempts,
            error=error,
            dead_letter=letter,
        )
        return Outcome(
            key,
            "dead-lettered",
            attempts,
            error=error,
            dead_letter=letter,
            ms=(time.perf_counter() - started) * 1000,
        )

    def _limiter(self, key: str, concurrency: int | None) -> anyio.CapacityLimiter | None:
        if not concurrency or concurrency < 1:
            return None
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = anyio.CapacityLimiter(concurrency)
        return limiter


_NO_LIMIT = contextlib.nullcontext()
_NO_SPAN = _trace.Span()


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop; None under another anyio backend (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _expired(deadline: asyncio.Timeout | anyio.CancelScope) -> bool:
    if isinstance(deadline, asyncio.Timeout):
        return deadline.expired()
    return deadline.cancelled_caught


async def _gather(deliveries: list[Coroutine[Any, Any, Outcome]]) -> list[Outcome]:
    """Run sibling deliveries as asyncio tasks, like a task group: all finish before this
    returns, cancelling it cancels and awaits them all, and an error (a delivery itself
    never raises for a handler's failure) comes out in an exception group."""
    results = await asyncio.gather(*deliveries, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise BaseExceptionGroup("unhandled errors in event delivery", errors)
    return [r for r in results if not isinstance(r, BaseException)]


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
