"""What the flow actions (`event.dispatch`, `workflow.start`, `task.schedule`) act on.

A workflow task or an action is called with its payload and config only; the
flow actions also need the engine.  The process that hosts them (`oneiric
workflow run|resume|serve`, `event emit|consume|replay`, `action invoke`,
`task serve`) binds one `FlowContext` around the work with `bound(...)`;
every task started inside (workflow nodes, handlers, actions) sees it through
`current()`.  Outside such a host `current()` is None and the flow actions
refuse with a clear error.  A runtime that swaps plans live (`oneiric run`,
`oneiric worker`) binds a `Following` instead: one engine per plan it has
run, `current()` the one of the plan running now.

The context's `emitter` is where `event.dispatch` emits: the in-process
`EventBus` (delivered here, the result is the delivery) or, when the host was
given a Redis event transport (`--events`), the topic's stream (`RedisEvents`:
appended for the consumers, the result says where).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio

if TYPE_CHECKING:
    from oneiric._flows.events import EventBus
    from oneiric._flows.store import FlowStore
    from oneiric._flows.workflows import Workflows
    from oneiric._plan.model import Plan, Route


class Emitted(Protocol):
    """What emitting one event gave: a delivery (in process) or a stream entry (Redis)."""

    def as_json(self) -> dict[str, Any]: ...


class Emitter(Protocol):
    """Where events emitted from code go: `EventBus` (in process) or `RedisEvents`."""

    def route(self, topic: str) -> Route:
        """The topic's route; `oneiric._flows.host.Unknown` naming the known topics if none."""
        ...

    async def emit(
        self,
        topic: str,
        payload: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        event_id: str | None = None,
    ) -> Emitted: ...


SETTLE_TIMEOUT_S = 10.0  # how long a flow action waits for its plan's engine to open


@dataclass(frozen=True)
class FlowContext:
    plan: Plan
    store: FlowStore
    workflows: Workflows
    bus: EventBus  # delivers here: `event emit|consume|replay` hand their events to it
    emitter: Emitter  # where `event.dispatch` emits: `bus`, or Redis Streams (`--events`)


class Following:
    """The engines of a runtime that swaps plans live: one per plan digest it has run.

    `current()` under it is the engine of the runtime's plan now (`plan()`);
    until that plan's engine is open (at start, the moment after a swap), the
    newest one, and `settled()` (the flow actions) waits for it.  Runs
    started under an older plan go on in that plan's engine.
    """

    def __init__(self, plan: Callable[[], Plan | None]) -> None:
        self.plan = plan
        self.contexts: dict[str, FlowContext] = {}  # plan digest -> its engine, oldest first
        self._opened: anyio.Event | None = None

    def add(self, context: FlowContext) -> None:
        self.contexts[context.plan.digest or ""] = context
        if self._opened is not None:
            self._opened.set()
            self._opened = None

    def discard(self, context: FlowContext) -> None:
        """`context` is closing: new calls no longer reach it."""
        digest = context.plan.digest or ""
        if self.contexts.get(digest) is context:
            del self.contexts[digest]

    def __call__(self) -> FlowContext | None:
        plan = self.plan()
        found = self.contexts.get(plan.digest or "") if plan is not None else None
        if found is None and self.contexts:
            return next(reversed(self.contexts.values()))
        return found

    async def settled(self, timeout_s: float = SETTLE_TIMEOUT_S) -> FlowContext | None:
        """The engine of the plan running now, once open (at most `timeout_s` waited)."""
        with anyio.move_on_after(timeout_s):
            while (plan := self.plan()) is not None and hosts_flows(plan):
                if (plan.digest or "") in self.contexts:
                    break
                if self._opened is None:
                    self._opened = anyio.Event()
                await self._opened.wait()
        return self()


_CURRENT: ContextVar[FlowContext | Following | None] = ContextVar(
    "oneiric_flow_context", default=None
)


@contextmanager
def bound(context: FlowContext | Following) -> Iterator[None]:
    """Make `context` the current one for the code (and the tasks it starts) inside."""
    token = _CURRENT.set(context)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> FlowContext | None:
    found = _CURRENT.get()
    return found() if isinstance(found, Following) else found


async def settled() -> FlowContext | None:
    """`current()`, once the engine of a `Following` runtime's plan is open."""
    found = _CURRENT.get()
    return await found.settled() if isinstance(found, Following) else found


_NODE: ContextVar[tuple[str, str] | None] = ContextVar("oneiric_flow_node", default=None)


@contextmanager
def at_node(run_id: str, node: str) -> Iterator[None]:
    """Mark the code inside as workflow node `node` of run `run_id` (see `node()`)."""
    token = _NODE.set((run_id, node))
    try:
        yield
    finally:
        _NODE.reset(token)


def node() -> tuple[str, str] | None:
    """(run id, node name) of the workflow node running here, if any.

    The flow actions derive their ids from it, so a node that runs again (a
    retry, a resumed run) does not start or schedule the same thing twice.
    """
    return _NODE.get()


_ATTEMPT: ContextVar[int | None] = ContextVar("oneiric_flow_attempt", default=None)


@contextmanager
def at_attempt(number: int) -> Iterator[None]:
    """Mark the code inside as attempt `number` of the node (or scheduled task) it runs."""
    token = _ATTEMPT.set(number)
    try:
        yield
    finally:
        _ATTEMPT.reset(token)


def attempt() -> int | None:
    """The attempt (1, 2, ...) of the workflow node or scheduled task running here, if any.

    Numbered across processes when the node runs on workers (a claimed node
    continues at the next attempt).
    """
    return _ATTEMPT.get()


ACTIONS_MODULE = "oneiric.actions.flow"  # the flow actions' implementations


def needs_engine(plan: Plan) -> bool:
    """Whether a component of `plan` is a flow action (its host must run all tasks, handlers)."""
    return any(
        c.implementation is not None and c.implementation.module == ACTIONS_MODULE
        for c in plan.components
    )


def hosts_flows(plan: Plan) -> bool:
    """Whether `plan` needs an engine: it has routes, workflows or flow actions."""
    return bool(plan.routes or plan.workflows) or needs_engine(plan)
