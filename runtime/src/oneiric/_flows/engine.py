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

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import structlog

from oneiric._flows.context import Emitter, FlowContext, Following, hosts_flows
from oneiric._flows.events import DEFAULT_HANDLER_TIMEOUT_S, EventBus
from oneiric._flows.link import RETRY_MIN_S, backoff
from oneiric._flows.store import FlowStore
from oneiric._flows.streams import BrokerUnavailable
from oneiric._flows.workflows import NodeRunner, Workflows
from oneiric._lifecycle.runtime import Runtime
from oneiric._plan.model import Plan

_log = structlog.get_logger("oneiric.flows")


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
    failed: Callable[[BaseException, float], object] = lambda error, wait_s: None,
) -> None:
    """Open the engine of each plan `runtime` runs that `hosts_flows`, into `following`.

    Checked at start and whenever `swapped()` returns (the next live swap).
    `store()` is called at the first engine (so a plan without flows opens no
    store); `opened` is told each new engine.  An engine that cannot open (its
    broker unreachable) is retried with backoff, `failed(error, wait_s)` told of
    each attempt, while the runtime goes on serving (the flow actions wait for it
    a while, then act on the newest engine open).  Once the running plan's engine is
    open, or the running plan needs none, the engines of older plans close: new
    calls no longer reach them, and closing waits for the runs started under
    them.  Runs until cancelled.
    """
    releases: dict[str, anyio.Event] = {}  # plan digest -> set when its engine may close

    def retire_all_but(keep: str | None) -> None:
        for digest, release in releases.items():
            if digest != keep:
                release.set()

    async def hold(plan: Plan, release: anyio.Event) -> None:
        digest = plan.digest or ""
        delay, rng = RETRY_MIN_S, random.Random()
        try:
            while not release.is_set():
                try:
                    async with engine(
                        plan, runtime, store(), tasks=tasks, events_url=events_url
                    ) as context:
                        following.add(context)
                        opened(context)
                        running = runtime.plan
                        if running is not None and (running.digest or "") == digest:
                            retire_all_but(digest)
                        await release.wait()
                        following.discard(context)
                    return
                except BrokerUnavailable as exc:
                    wait_s, delay = backoff(delay, rng)
                    _log.warning("flow engine cannot open", plan=digest, error=str(exc),
                                 retry_in_s=round(wait_s, 3))  # fmt: skip
                    failed(exc, wait_s)
                    with anyio.move_on_after(wait_s):
                        await release.wait()
        finally:
            if releases.get(digest) is release:
                del releases[digest]

    async with anyio.create_task_group() as group:
        while True:
            plan = runtime.plan
            if plan is not None and hosts_flows(plan):
                digest = plan.digest or ""
                release = releases.get(digest)
                if release is None or release.is_set():  # new, or closing: open it (again)
                    releases[digest] = release = anyio.Event()
                    group.start_soon(hold, plan, release)
                elif digest in following.contexts:  # swapped back to a plan still open
                    retire_all_but(digest)
            else:
                retire_all_but(None)
            await swapped()
