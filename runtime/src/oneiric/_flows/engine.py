"""The flow engine of a host process: its workflows and event bus, as one `FlowContext`.

Every host of workflow nodes, handlers and flow actions builds it the same
way: the command line (`oneiric workflow|event|action|task`), and `oneiric
run` and `oneiric worker`, which open one per plan they run (`follow`): code
called there emits, starts and schedules like a workflow node, and a worker's
nodes see what they would see in the process that started their run
(`oneiric._flows.context`).  Given a Redis event transport
(`events_url`, the host's `--events`), what the flow actions emit is appended
to the topic's stream instead of delivered here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from oneiric._flows.context import Emitter, FlowContext, Following, hosts_flows
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


async def follow(
    runtime: Runtime,
    following: Following,
    store: Callable[[], FlowStore],
    swapped: Callable[[], Awaitable[object]],
    *,
    tasks: NodeRunner | None = None,
    events_url: str | None = None,
    opened: Callable[[FlowContext], object] = lambda context: None,
) -> None:
    """Open the engine of each plan `runtime` runs that `hosts_flows`, into `following`.

    Checked at start and whenever `swapped()` returns (the next live swap).
    `store()` is called at the first engine (so a plan without flows opens no
    store); `opened` is told each new engine.  Runs until cancelled; the
    engines of older plans stay open for the runs started under them.
    """
    async with AsyncExitStack() as engines:
        while True:
            plan = runtime.plan
            digest = "" if plan is None else plan.digest or ""
            if plan is not None and digest not in following.contexts and hosts_flows(plan):
                context = await engines.enter_async_context(
                    engine(plan, runtime, store(), tasks=tasks, events_url=events_url)
                )
                following.add(context)
                opened(context)
            await swapped()
