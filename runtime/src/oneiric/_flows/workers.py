"""Workflow nodes on workers, through Redis Streams.

A run that dispatches (`RedisTasks`, given to `Workflows(tasks=...)`) appends
each ready node to the stream of its plan, `PREFIX tasks:DIGEST`, with the
run's input, the upstream results and a reply stream of its own
(`PREFIX results:DISPATCHER`); it records the node's checkpoint only when
the outcome comes back on that reply stream.

A worker (`serve_worker`, `oneiric worker`) is one consumer of the group
`workers` on the stream of the plan it runs: a worker whose plan has another
digest reads another stream, so it never takes that run's nodes.  When the
worker's plan is swapped live, it reads the new plan's stream from then on
(nodes in flight finish on the handles, which follow the swap).  The worker
runs the node's attempts (`workflows.attempt_node`: retry, backoff, timeout,
the task's concurrency per worker), numbering them in Redis (`streams.Attempts`), then
appends the outcome to the reply stream, acknowledges and forgets the
counter in one `MULTI`.  A worker killed mid-task leaves the entry pending;
another worker claims it after the visibility timeout (`XAUTOCLAIM`) and
continues at the next attempt: the killed one counts.  Live workers keep
their entries from being claimed (`XCLAIM … JUSTID` every third of the
visibility timeout).

A node on a worker sees the flow context it would see in process
(`oneiric._flows.context`): `node()` (its run id and name), `attempt()` (as
numbered in Redis), and `current()`: the engine of the node's plan among
those the worker's runtime opened (`engine.follow`, as `oneiric run` does):
the plan, the flow store, workflows whose nodes are dispatched to the
workers in turn and the event transport.  Its span is a child of the dispatcher's node
span (the W3C `traceparent` travels in the entry).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog

from oneiric import _trace
from oneiric._flows import streams
from oneiric._flows.context import Following, at_node, bound
from oneiric._flows.link import Link
from oneiric._flows.workflows import NodeOutcome, attempt_node
from oneiric._plan.model import Plan, WorkflowNode

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from oneiric._lifecycle.runtime import Runtime

T = TypeVar("T")
GROUP = "workers"


class _Retrying:
    """Redis calls retried with backoff while the broker is unreachable; `link` tracks it."""

    def __init__(self, link: Link, log: Any) -> None:
        self.link = link
        self._log = log

    async def __call__(self, op: Callable[[], Awaitable[T]]) -> T:
        return await self.link.retrying(op, streams.lost_connection(), self._log)


def tasks_stream(settings: streams.StreamSettings, digest: str) -> str:
    return settings.key("tasks", digest)


class RedisTasks:
    """Dispatches workflow nodes to workers and waits for their outcomes (`NodeRunner`)."""

    def __init__(self, client: Redis, settings: streams.StreamSettings) -> None:
        self.client = client
        self.settings = settings
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.replies = settings.key("results", self.name)
        self._waiting: dict[str, tuple[anyio.Event, list[NodeOutcome]]] = {}
        self._ensured: set[str] = set()
        self._log = structlog.get_logger("oneiric.workers").bind(dispatcher=self.name)
        self.link = Link("tasks", settings.url)
        self.call = _Retrying(self.link, self._log)

    @classmethod
    async def open(cls, url: str) -> RedisTasks:
        settings = streams.StreamSettings.parse(url)
        return cls(await streams.connect(settings), settings)

    async def serve(self) -> None:
        """Read the outcomes sent back to this dispatcher (run it beside the runs)."""
        last = "0-0"
        try:
            while True:
                reply: Any = await self.call(
                    lambda since=last: self.client.xread(  # type: ignore[misc]
                        {self.replies: since}, count=100, block=1000
                    )
                )
                for _, entries in reply or []:
                    for eid, raw in entries:
                        last = streams.text(eid)
                        f = streams.fields_text(raw)
                        waiting = self._waiting.get(f["dispatch"])
                        if waiting is None or waiting[1]:
                            continue  # a late duplicate (a claimed task ran twice)
                        waiting[1].append(
                            NodeOutcome(
                                f["ok"] == "1",
                                int(f["attempts"]),
                                f.get("result"),
                                f.get("error"),
                            )
                        )
                        waiting[0].set()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(*streams.lost_connection()):
                await self.client.delete(self.replies)  # a broker down at exit keeps it

    async def close(self) -> None:
        await self.client.aclose()

    async def run_node(
        self, digest: str, run_id: str, node: WorkflowNode, input_json: str, upstream_json: str
    ) -> NodeOutcome:
        stream = tasks_stream(self.settings, digest)
        if stream not in self._ensured:
            await self.call(lambda: streams.ensure_group(self.client, stream, GROUP))
            self._ensured.add(stream)
        dispatch = uuid.uuid4().hex
        done = anyio.Event()
        outcome: list[NodeOutcome] = []
        self._waiting[dispatch] = (done, outcome)
        fields = {
            "dispatch": dispatch,
            "run": run_id,
            "node": json.dumps(node.model_dump(mode="json"), sort_keys=True),
            "input": input_json,
            "upstream": upstream_json,
            "reply": self.replies,
        }
        _trace.inject(fields)  # the worker's span joins this node's trace
        try:
            await self.call(lambda: streams.publish(self.client, self.settings, stream, fields))
            self._log.debug("node dispatched", run=run_id, node=node.name, dispatch=dispatch)
            await done.wait()
            return outcome[0]
        finally:
            del self._waiting[dispatch]


async def serve_worker(
    client: Redis,
    settings: streams.StreamSettings,
    runtime: Runtime,
    *,
    consumer: str | None = None,
    prefetch: int = 16,
    block_ms: int = 1000,
    status: dict[str, Any] | None = None,
    link: Link | None = None,
    engines: Following | None = None,
) -> None:
    """Take the nodes of the runtime's current plan from Redis until cancelled.

    `status` receives the counters (done, failed, claimed, inflight, plan) and
    `link` the broker connection's state, as they change.  A node runs in the
    flow context of its plan's engine in `engines` (see the module's doc).
    """
    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    log = structlog.get_logger("oneiric.worker").bind(consumer=name)
    call = _Retrying(link or Link("broker", settings.url), log)
    counters = status if status is not None else {}
    counters.update(done=0, failed=0, claimed=0, inflight=0, plan=None)
    inflight: dict[str, streams.Group] = {}
    limiters: dict[str, anyio.CapacityLimiter] = {}
    rng = random.Random()
    slots = anyio.Condition()

    def current() -> tuple[Plan, streams.Group]:
        plan = runtime.plan
        assert plan is not None
        assert plan.digest is not None
        stream = tasks_stream(settings, plan.digest)
        return plan, streams.Group(client, settings, stream, GROUP, name)

    async def handle(plan: Plan, group: streams.Group, entry: streams.Entry, claimed: bool) -> None:
        try:
            f = entry.fields
            node = WorkflowNode.model_validate_json(f["node"])
            task_id = f"task:{node.task}"
            component = plan.component(task_id)
            counter = group.counter(entry.id, claimed=claimed)
            done = await call(counter.before)
            concurrency = component.concurrency if component else None
            limiter = None
            if concurrency:
                limiter = limiters.setdefault(node.task, anyio.CapacityLimiter(concurrency))
            try:
                handle = runtime.handle(task_id)
            except KeyError as exc:
                outcome = NodeOutcome(False, 0, None, str(exc))
            else:
                context = None if engines is None else engines.contexts.get(plan.digest or "")
                attributes = {"oneiric.run": f["run"], "oneiric.node": node.name}
                with (
                    _trace.span("oneiric.worker.node", attributes, f),
                    bound(context) if context is not None else contextlib.nullcontext(),
                    at_node(f["run"], node.name),
                ):
                    outcome = await attempt_node(
                        handle,
                        node,
                        component,
                        f["input"],
                        f["upstream"],
                        limiter=limiter,
                        rng=rng,
                        log=log.bind(run=f["run"], node=node.name, task=task_id),
                        count=lambda: call(counter.next),
                        done=done,
                    )
            reply = {"dispatch": f["dispatch"], "ok": "1" if outcome.ok else "0"}
            reply["attempts"] = str(outcome.attempts)
            reply["worker"] = name
            if outcome.result_json is not None:
                reply["result"] = outcome.result_json
            if outcome.error is not None:
                reply["error"] = outcome.error
            await call(
                lambda: _reply(
                    client, settings, group, entry.id, f["reply"], reply, counter.recorded
                )
            )
            counters["done" if outcome.ok else "failed"] += 1
        finally:
            inflight.pop(entry.id, None)
            counters["inflight"] = len(inflight)
            async with slots:
                slots.notify_all()

    async def keep_alive() -> None:
        while True:
            await anyio.sleep(settings.visibility_s / 3)
            by_group: dict[tuple[str, str], list[str]] = {}
            groups: dict[tuple[str, str], streams.Group] = {}
            for eid, group in list(inflight.items()):
                by_group.setdefault((group.stream, group.group), []).append(eid)
                groups[(group.stream, group.group)] = group
            for key, ids in by_group.items():
                await call(lambda g=groups[key], i=ids: g.keep_alive(i))  # type: ignore[misc]
            plan, group = current()
            for entry in await call(lambda g=group: g.claim(prefetch)):  # type: ignore[misc]
                if entry.id not in inflight:
                    counters["claimed"] += 1
                    log.info("claimed", entry=entry.id)
                    inflight[entry.id] = group
                    tasks.start_soon(handle, plan, group, entry, True)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(keep_alive)
        ensured: set[str] = set()
        while True:
            plan, group = current()
            if group.stream not in ensured:
                await call(group.create)
                ensured.add(group.stream)
                counters["plan"] = plan.digest
                if engines is not None:
                    await engines.settled()  # its nodes see its engine from the first
                log.info("taking nodes", plan=plan.digest, stream=group.stream)
            async with slots:
                while len(inflight) >= prefetch:
                    await slots.wait()
            entries = await call(lambda g=group: g.read(prefetch - len(inflight), block_ms))  # type: ignore[misc]
            for entry in entries:
                inflight[entry.id] = group
                tasks.start_soon(handle, plan, group, entry, False)
            counters["inflight"] = len(inflight)


async def _reply(
    client: Redis,
    settings: streams.StreamSettings,
    group: streams.Group,
    entry_id: str,
    reply_to: str,
    fields: dict[str, str],
    counted: bool,
) -> None:
    """The outcome to the dispatcher, the acknowledgement and the counter's end: one MULTI."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.xadd(reply_to, streams.xadd_fields(fields), maxlen=settings.maxlen, approximate=True)
        pipe.xack(group.stream, group.group, entry_id)
        if counted:
            pipe.hdel(group.attempts_key, entry_id)
        await pipe.execute()
