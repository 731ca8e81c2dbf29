"""The flow engine of a host process: its workflows and event bus, as one `FlowContext`.

Every host of workflow nodes, handlers and flow actions builds it the same
way: the command line (`oneiric workflow|event|action|task`) and `oneiric
worker`, whose nodes must see what they would see in the process that
started their run (`oneiric._flows.context`).  Given a Redis event transport
(`events_url`, the host's `--events`), what the flow actions emit is appended
to the topic's stream instead of delivered here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from oneiric._flows.context import Emitter, FlowContext
from oneiric._flows.events import DEFAULT_HANDLER_TIMEOUT_S, EventBus
from oneiric._flows.store import FlowStore
from oneiric._flows.workflows import NodeRunner, Workflows
from oneiric._lifecycle.runtime import Runtime
from oneiric._plan.model import Plan


@asynccontextmanager
async def engine(
    plan: Plan,
    runtime: Runtime,
    store: FlowStore,
    *,
    tasks: NodeRunner | None = None,
    handler_timeout_s: float = DEFAULT_HANDLER_TIMEOUT_S,
    events_url: str | None = None,
) -> AsyncIterator[FlowContext]:
    """Workflows (nodes run here, or dispatched by `tasks`) and an in-process event bus
    over `runtime`; emitting to `events_url`'s streams when given (an unreachable broker:
    `streams.BrokerUnavailable`).  Leaving waits for the runs started inside."""
    from oneiric._flows.redis_events import RedisEvents

    events = None if events_url is None else await RedisEvents.open(events_url, plan)
    try:
        async with Workflows(plan, runtime, store, tasks=tasks) as flows:
            bus = EventBus(
                plan, runtime, store, workflows=flows, handler_timeout_s=handler_timeout_s
            )
            emitter: Emitter = bus if events is None else events
            yield FlowContext(plan, store, flows, bus, emitter)
    finally:
        if events is not None:
            await events.close()
