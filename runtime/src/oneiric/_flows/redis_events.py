"""Events across processes and machines: the plan's routes on Redis Streams.

`emit` appends the event to the topic's stream `PREFIX events:TOPIC` (trimmed
to about `maxlen` entries, see `streams`), with the current trace context in
its headers.  An event emitted under a stable id (a workflow node's
`RUN-NODE`, see `oneiric.actions.flow`) is appended once: the append and a
marker `PREFIX emitted:TOPIC:ID` (kept the URL's `dedupe` seconds, 7 days by
default; 0 appends every emit) are one script, so a node that runs again
gets the first entry back (`queued` false) instead of a second one.  Each subscription is a consumer
group on that stream: a `broadcast` route has one group per handler
(`handler:KEY`), so every handler sees every event once; an `exclusive`
route has one group (`exclusive`) whose consumers share the events, each
delivered to the first handler (by priority) whose filter matches.  Groups
are created at the stream's end by whichever comes first, an emitter or a
consumer, so an event emitted under a plan reaches that plan's handlers even
before any consumer runs; a subscription added later sees only what follows.

A consumer process (`consume`) reads each group (`XREADGROUP`), delivers
through `EventBus.deliver` (same filters, retries with backoff, timeouts and
per-process concurrency limits as in process), acknowledges a success
(`XACK`), keeps its in-flight entries alive (`XCLAIM JUSTID`) and claims
what dead consumers left pending longer than the visibility timeout
(`XAUTOCLAIM`).  Attempts are counted in Redis (`streams.Group.attempt`), so
the count survives the death of a consumer: a claimed entry continues at the
next attempt, and one whose attempts are used up becomes a dead letter.  A
dead letter is appended to `PREFIX dead-letters` in the same MULTI as the
acknowledgement; `oneiric event dead-letters` and `event replay` read it.

Lost connections are retried with backoff (0.1 s doubling to 5 s, jittered)
and counted in `status` (connected, last error, reconnects); nothing crashes.
Every second a consumer also samples the backlog of its groups (`XINFO
GROUPS`: pending and lag) into `backlog`, in a task of its own: a failed
sample (the broker down) keeps the last values, their `sampled_at` ageing.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog

from oneiric import _trace
from oneiric._flows import streams
from oneiric._flows.events import EventBus, EventError, Outcome, find_route
from oneiric._flows.link import Link
from oneiric._flows.store import DeadLetter
from oneiric._flows.workflows import to_json
from oneiric._plan.model import Plan, Route

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")
STATE_KEY = "dead-letters:state"
SAMPLE_EVERY_S = 1.0  # the backlog sample's period (the heartbeat's)

# KEYS: the stream, the id's marker; ARGV: maxlen, marker seconds, the entry's fields.
# {1, entry} when appended now; {0, entry} when the id was appended before.
_APPEND_ONCE = """
local first = redis.call('GET', KEYS[2])
if first then return {0, first} end
local entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], entry, 'EX', ARGV[2])
return {1, entry}
"""


@dataclass(frozen=True)
class Published:
    event_id: str
    topic: str
    stream: str
    entry: str
    queued: bool = True  # False: an emit with the same id had appended `entry` already

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "topic": self.topic,
            "stream": self.stream,
            "entry": self.entry,
            "queued": self.queued,
        }


@dataclass(frozen=True)
class Subscription:
    """One consumer group of one topic: its handlers, in priority order."""

    topic: str
    group: str
    handlers: list[str]


def subscriptions(plan: Plan, topics: list[str] | None = None) -> list[Subscription]:
    found: list[Subscription] = []
    for route in plan.routes:
        if topics is not None and route.topic not in topics:
            continue
        if route.fanout == "exclusive":
            found.append(Subscription(route.topic, "exclusive", list(route.handlers)))
        else:
            found += [Subscription(route.topic, f"handler:{k}", [k]) for k in route.handlers]
    return found


@dataclass
class Connection:
    """What `oneiric status` and the logs say about the broker: its `Link` and the counters."""

    link: Link
    delivered: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    inflight: int = 0

    def as_json(self) -> dict[str, Any]:
        counts = {k: v for k, v in self.__dict__.items() if k != "link"}
        return self.link.as_json() | counts


@dataclass
class _Consumer:
    sub: Subscription
    group: streams.Group
    route: Route
    slots: _Slots
    inflight: set[str] = field(default_factory=set)


class RedisEvents:
    """Publishes events to, and consumes them from, Redis Streams; reads the dead letters."""

    def __init__(self, client: Redis, settings: streams.StreamSettings, plan: Plan | None) -> None:
        self.client = client
        self.settings = settings
        self.plan = plan
        self.status = Connection(Link("broker", settings.url))
        self.backlog: dict[str, dict[str, Any]] = {}  # TOPIC/GROUP -> its last sample
        self._ensured: set[tuple[str, str]] = set()
        self._log = structlog.get_logger("oneiric.events.redis").bind(
            plan=plan.digest if plan else None, broker=settings.safe_url
        )

    @classmethod
    async def open(cls, url: str, plan: Plan | None = None) -> RedisEvents:
        """Connected to `url` (`streams.BrokerUnavailable` naming it when unreachable)."""
        settings = streams.StreamSettings.parse(url)
        return cls(await streams.connect(settings), settings, plan)

    async def close(self) -> None:
        await self.client.aclose()

    @property
    def groups(self) -> list[str]:
        """TOPIC/GROUP of each group consumed (for status)."""
        return list(self.backlog)

    def stream(self, topic: str) -> str:
        return self.settings.key("events", topic)

    def route(self, topic: str) -> Route:
        assert self.plan is not None, "routing needs the plan"
        return find_route(self.plan, topic)

    # -- publishing ----------------------------------------------------------------------
    async def emit(
        self,
        topic: str,
        payload: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        event_id: str | None = None,
    ) -> Published:
        """Append one event to its topic's stream (its groups created first if missing).

        A given `event_id` is appended once (see the module's doc); a new id each time
        otherwise.
        """
        assert self.plan is not None, "emitting needs the plan's routes"
        find_route(self.plan, topic)
        payload_json = to_json(payload, "the event payload")
        header_map = {str(k): str(v) for k, v in (headers or {}).items()}
        _trace.inject(header_map)  # emitted inside a span (a node, a handler): same trace
        eid = event_id or uuid.uuid4().hex
        stream = self.stream(topic)
        for sub in subscriptions(self.plan, [topic]):
            if (stream, sub.group) not in self._ensured:
                await streams.ensure_group(self.client, stream, sub.group)
                self._ensured.add((stream, sub.group))
        fields = {
            "id": eid,
            "topic": topic,
            "payload": payload_json,
            "headers": json.dumps(header_map),
            "emitted_at": repr(time.time()),
        }
        if event_id is None or not self.settings.dedupe_s:
            entry = await streams.publish(self.client, self.settings, stream, fields)
            return Published(eid, topic, stream, entry)
        marker = self.settings.key("emitted", topic, eid)
        args: list[str | int] = [self.settings.maxlen, self.settings.dedupe_s]
        args += [x for kv in fields.items() for x in kv]
        reply: Any = await self.client.eval(_APPEND_ONCE, 2, stream, marker, *args)
        new, entry = reply
        return Published(eid, topic, stream, streams.text(entry), bool(new))

    # -- consuming -----------------------------------------------------------------------
    async def consume(
        self,
        bus: EventBus,
        *,
        consumer: str | None = None,
        prefetch: int = 32,
        block_ms: int = 1000,
        stop: anyio.Event | None = None,
    ) -> None:
        """Deliver the plan's events to `bus`'s handlers until `stop` is set (or cancelled).

        When `stop` is set, reading stops and the in-flight deliveries finish.
        """
        name = consumer or f"{socket.gethostname()}-{os.getpid()}"
        stop = stop or anyio.Event()
        consumers = [
            _Consumer(
                sub,
                streams.Group(self.client, self.settings, self.stream(sub.topic), sub.group, name),
                bus.route(sub.topic),
                _Slots(prefetch),
            )
            for sub in subscriptions(bus.plan)
        ]
        self.backlog = {
            f"{c.sub.topic}/{c.group.group}": {
                "topic": c.sub.topic,
                "stream": c.group.stream,
                "group": c.group.group,
                "pending": None,
                "lag": None,
                "sampled_at": None,
                "error": None,
            }
            for c in consumers
        }
        for c in consumers:
            await self._retrying(c.group.create)
        self._log.info("consuming", consumer=name, groups=[c.group.group for c in consumers])
        async with anyio.create_task_group() as deliveries, anyio.create_task_group() as loops:
            for c in consumers:
                loops.start_soon(self._read_loop, bus, c, deliveries, prefetch, block_ms)
                loops.start_soon(self._claim_loop, bus, c, deliveries, prefetch)
            loops.start_soon(self._sample_loop)
            await stop.wait()
            loops.cancel_scope.cancel()

    async def _sample_loop(self) -> None:
        """Every `SAMPLE_EVERY_S`, each stream's `XINFO GROUPS` into `backlog`.

        Not retried through the link (delivery's connection state stays delivery's):
        a failure or a sample slower than the period keeps the last values and says why.
        """
        by_stream: dict[str, list[dict[str, Any]]] = {}
        for sample in self.backlog.values():
            by_stream.setdefault(sample["stream"], []).append(sample)
        while True:
            for stream, mine in sorted(by_stream.items()):
                try:
                    with anyio.fail_after(SAMPLE_EVERY_S):
                        found = await streams.backlog(self.client, stream)
                except Exception as exc:  # broker down, timeout: keep the last sample
                    for b in mine:
                        b["error"] = str(exc) or type(exc).__name__
                    continue
                now = time.time()
                for b in mine:
                    if b["group"] in found:
                        b["pending"], b["lag"] = found[b["group"]]
                        b.update(sampled_at=now, error=None)
                    else:
                        b["error"] = "no such group"
            await anyio.sleep(SAMPLE_EVERY_S)

    async def _read_loop(
        self, bus: EventBus, c: _Consumer, deliveries: Any, prefetch: int, block_ms: int
    ) -> None:
        while True:
            await c.slots.wait_free(c.inflight)
            entries = await self._retrying(
                lambda: c.group.read(prefetch - len(c.inflight), block_ms)
            )
            for entry in entries:
                c.inflight.add(entry.id)
                deliveries.start_soon(self._handle, bus, c, entry, False)

    async def _claim_loop(
        self, bus: EventBus, c: _Consumer, deliveries: Any, prefetch: int
    ) -> None:
        """Every third of the visibility timeout: keep ours alive, claim the abandoned."""
        while True:
            await anyio.sleep(self.settings.visibility_s / 3)
            await self._retrying(lambda: c.group.keep_alive(sorted(c.inflight)))
            claimed = await self._retrying(lambda: c.group.claim(prefetch))
            for entry in claimed:
                if entry.id in c.inflight:
                    continue
                self.status.claimed += 1
                self._log.info("claimed", group=c.group.group, entry=entry.id)
                c.inflight.add(entry.id)
                deliveries.start_soon(self._handle, bus, c, entry, True)

    async def _handle(
        self, bus: EventBus, c: _Consumer, entry: streams.Entry, claimed: bool
    ) -> None:
        self.status.inflight += 1
        try:
            await self._deliver(bus, c, entry, claimed)
        finally:
            self.status.inflight -= 1
            c.inflight.discard(entry.id)
            await c.slots.release()

    async def _deliver(
        self, bus: EventBus, c: _Consumer, entry: streams.Entry, claimed: bool
    ) -> None:
        group, f = c.group, entry.fields
        try:
            eid, topic, payload_json = f["id"], f["topic"], f["payload"]
            headers = {str(k): str(v) for k, v in json.loads(f["headers"]).items()}
            document = {"topic": topic, "payload": json.loads(payload_json), "headers": headers}
            emitted_at = float(f["emitted_at"])
        except (KeyError, ValueError, AttributeError) as exc:
            letter = streams.dead_letter_fields(
                f.get("id", entry.id), c.sub.topic, "-", json.dumps(f), {}, f"malformed: {exc}", 0
            )
            await self._retrying(lambda: group.ack(entry.id, letter))
            return
        matched, _ = bus.select(c.route, document, c.sub.handlers)
        if not matched:
            await self._retrying(lambda: group.ack(entry.id, forget=claimed))
            return
        key = matched[0]
        counter = group.counter(entry.id, claimed=claimed)
        done = await self._retrying(counter.before)

        async def count() -> int:
            return await self._retrying(counter.next)

        async def dead(error: str, attempts: int) -> str | None:
            letter = streams.dead_letter_fields(
                eid, topic, key, payload_json, headers, error, attempts
            )
            self.status.dead_lettered += 1
            return await self._retrying(lambda: group.ack(entry.id, letter))

        outcome: Outcome = await bus.deliver(
            key,
            eid,
            topic,
            payload_json,
            headers,
            emitted_at=emitted_at,
            count=count,
            done=done,
            record=dead,
        )
        if outcome.status == "delivered":
            await self._retrying(lambda: group.ack(entry.id, forget=counter.recorded))
            self.status.delivered += 1

    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """`op()`, retried with backoff while the broker is unreachable; status tracks it."""
        return await self.status.link.retrying(op, streams.lost_connection(), self._log)

    # -- dead letters --------------------------------------------------------------------
    async def dead_letters(
        self, include_resolved: bool = False, limit: int = 100
    ) -> list[DeadLetter]:
        """Oldest first, as `FlowStore.dead_letters`."""
        entries: Any = await self.client.xrange(self.settings.key(streams.DEAD_LETTERS))
        state = {
            streams.text(k): json.loads(v)
            for k, v in (await self.client.hgetall(self.settings.key(STATE_KEY))).items()
        }
        letters = [_letter(streams.text(eid), streams.fields_text(f), state) for eid, f in entries]
        return [d for d in letters if include_resolved or d.resolved_at is None][:limit]

    async def dead_letter(self, letter_id: str) -> DeadLetter | None:
        try:
            entries: Any = await self.client.xrange(
                self.settings.key(streams.DEAD_LETTERS), letter_id, letter_id
            )
        except Exception as exc:  # redis ResponseError: not a stream id
            if "Invalid stream ID" in str(exc):
                return None
            raise
        if not entries:
            return None
        raw = await self.client.hget(self.settings.key(STATE_KEY), letter_id)
        state = {letter_id: json.loads(raw)} if raw is not None else {}
        return _letter(letter_id, streams.fields_text(entries[0][1]), state)

    async def replay(self, bus: EventBus, letter_id: str) -> tuple[DeadLetter, Outcome]:
        """Deliver a dead letter again to its handler (here); resolved on success."""
        letter = await self.dead_letter(letter_id)
        if letter is None:
            raise EventError(f"no dead letter {letter_id}")
        outcome = await bus.redeliver(letter)
        key = self.settings.key(STATE_KEY)
        raw = await self.client.hget(key, letter_id)
        state = json.loads(raw) if raw is not None else {"replays": 0}
        state["replays"] += 1
        if outcome.status == "delivered":
            state["resolved_at"] = time.time()
        else:
            state["error"] = outcome.error
        await self.client.hset(key, letter_id, json.dumps(state))
        return letter, outcome


class _Slots:
    """At most `size` entries of one group in flight in this process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cond = anyio.Condition()

    async def wait_free(self, inflight: set[str]) -> None:
        async with self.cond:
            while len(inflight) >= self.size:
                await self.cond.wait()

    async def release(self) -> None:
        async with self.cond:
            self.cond.notify_all()


def _letter(letter_id: str, f: dict[str, str], state: dict[str, Any]) -> DeadLetter:
    extra = state.get(letter_id, {})
    return DeadLetter(
        letter_id,
        f["event_id"],
        f["topic"],
        f["handler"],
        json.loads(f["payload"]) if f["handler"] != "-" else f["payload"],
        json.loads(f["headers"]),
        extra.get("error", f["error"]),
        int(f["attempts"]),
        float(f["created_at"]),
        int(extra.get("replays", 0)),
        extra.get("resolved_at"),
    )
