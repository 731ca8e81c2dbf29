"""Redis Streams primitives shared by the event transport, workers and the Redis adapters.

Nothing here is home-made where Redis has the primitive: a stream per topic
(`XADD ... MAXLEN ~ N`), a consumer group per subscription (`XGROUP CREATE`),
delivery to one consumer of a group (`XREADGROUP`), acknowledgement (`XACK`),
a pending entry claimed by another consumer once idle longer than the
visibility timeout (`XAUTOCLAIM`), and a heartbeat that keeps a slow but
alive consumer's entries from being claimed (`XCLAIM ... JUSTID`, which
resets the idle time without counting a delivery).  Attempts are counted in a
hash per group and by Redis's delivery count (`Attempts`), so a retry or a
claim by another process continues the count instead of restarting it.

redis-py is an optional extra (`oneiric-runtime[redis]`), imported only when
a Redis URL is used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

from oneiric._flows.link import safe_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_PREFIX = "oneiric:"
DEFAULT_MAXLEN = 100_000
DEFAULT_VISIBILITY_S = 30.0
DEFAULT_DEDUPE_S = 7 * 24 * 3600  # how long an event id emitted once is not appended again
DEAD_LETTERS = "dead-letters"
N = TypeVar("N", int, float)
MAX_CONNECTIONS = 256  # per process; a consumer holds one per group while it blocks


class BrokerUnavailable(Exception):
    """The Redis server cannot be reached or refused us (exit 2 at the CLI)."""


@dataclass(frozen=True)
class StreamSettings:
    """Where and how: parsed from
    `redis://host:port/db?prefix=..&maxlen=..&visibility=..&dedupe=..`."""

    url: str  # the connection URL, without our own query parameters
    prefix: str = DEFAULT_PREFIX
    maxlen: int = DEFAULT_MAXLEN  # approximate per-stream trim (MAXLEN ~)
    visibility_s: float = DEFAULT_VISIBILITY_S
    dedupe_s: int = DEFAULT_DEDUPE_S  # a stable event id is appended once per window; 0: always

    @classmethod
    def parse(cls, url: str) -> StreamSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise BrokerUnavailable(f"event broker {url!r}: not a Redis URL (redis://host:port/db)")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        names = ("prefix", "maxlen", "visibility", "dedupe")
        own: dict[str, str] = {k: query.pop(k) for k in names if k in query}
        rest = "&".join(f"{k}={v}" for k, v in query.items())
        where = f"event broker {safe_url(url)}"
        return cls(
            urlunsplit(parts._replace(query=rest)),
            own.get("prefix", DEFAULT_PREFIX),
            _number(own, "maxlen", int, DEFAULT_MAXLEN, "an integer", where),
            _number(own, "visibility", float, DEFAULT_VISIBILITY_S, "seconds", where),
            _number(own, "dedupe", int, DEFAULT_DEDUPE_S, "whole seconds, 0 or more", where, 0),
        )

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def safe_url(self) -> str:
        """The URL without a password (for messages and status)."""
        return safe_url(self.url)


def _number(
    own: Mapping[str, str],
    name: str,
    kind: type[N],
    default: N,
    what: str,
    where: str,
    least: N | None = None,
) -> N:
    """URL parameter `name` as a `kind` (`default` when absent), at least `least` if given;
    `BrokerUnavailable` naming it."""
    if name not in own:
        return default
    try:
        value = kind(own[name])
    except ValueError:
        value = None
    if value is None or (least is not None and value < least):
        raise BrokerUnavailable(f"{where}: URL parameter {name}={own[name]!r}: must be {what}")
    return value


def lost_connection() -> tuple[type[BaseException], ...]:
    """The errors of a lost (or not yet restored) connection to Redis: retried, not fatal.

    (`BusyLoadingError`, a Redis restarting and reading its AOF, is a `ConnectionError`.)
    """
    from redis.exceptions import ConnectionError, TimeoutError

    return (ConnectionError, TimeoutError, OSError)


async def connect(settings: StreamSettings) -> Redis:
    """A client whose server answered PING; `BrokerUnavailable` naming the URL otherwise."""
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise BrokerUnavailable(
            "the Redis event transport needs redis-py: pip install 'oneiric-runtime[redis]'"
        ) from None
    # A blocking pool: a burst (a wide workflow level dispatched at once) waits for a
    # connection instead of failing with "Too many connections" (the default pool's cap).
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=MAX_CONNECTIONS,
        timeout=None,
        socket_connect_timeout=5,
        health_check_interval=10,
    )
    client: Redis = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        raise BrokerUnavailable(f"event broker {settings.safe_url} is unreachable: {exc}") from None
    return client


def check(settings: StreamSettings) -> None:
    """PING the server synchronously (before an event loop runs); `BrokerUnavailable` if not."""
    try:
        import redis
    except ImportError:
        raise BrokerUnavailable(
            "the Redis transport needs redis-py: pip install 'oneiric-runtime[redis]'"
        ) from None
    client = redis.Redis.from_url(settings.url, socket_connect_timeout=5)
    try:
        client.ping()
    except Exception as exc:
        raise BrokerUnavailable(f"event broker {settings.safe_url} is unreachable: {exc}") from None
    finally:
        client.close()


async def ensure_group(client: Redis, stream: str, group: str) -> None:
    """Create `group` on `stream` (and the stream) at its end, unless it exists."""
    from redis.exceptions import ResponseError

    try:
        await client.xgroup_create(stream, group, id="$", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def backlog(client: Redis, stream: str) -> dict[str, tuple[int, int | None]]:
    """Each group of `stream`: its pending entries (delivered, not acknowledged) and its lag
    (entries not yet delivered to it; None before Redis 7, or when Redis cannot tell,
    e.g. after a trim or an XDEL), from `XINFO GROUPS`.  No groups: an empty dict."""
    from redis.exceptions import ResponseError

    try:
        reply: Any = await client.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" not in str(exc):
            raise
        return {}
    return {
        text(g["name"]): (int(g["pending"]), None if g.get("lag") is None else int(g["lag"]))
        for g in reply
    }


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def fields_text(fields: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in fields.items()}


@dataclass(frozen=True)
class Entry:
    """One stream entry as delivered to a consumer."""

    stream: str
    id: str
    fields: dict[str, str]


class Group:
    """One consumer of one group of one stream: read, claim, keep alive, acknowledge."""

    def __init__(
        self, client: Redis, settings: StreamSettings, stream: str, group: str, consumer: str
    ) -> None:
        self.client = client
        self.settings = settings
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.attempts_key = settings.key("attempts", stream.removeprefix(settings.prefix), group)

    async def create(self) -> None:
        await ensure_group(self.client, self.stream, self.group)

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """New entries for this consumer (waits up to `block_ms` for one)."""
        from redis.exceptions import ResponseError

        try:
            reply: Any = await self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.create()  # the stream was deleted (or Redis lost it): start again
            return []
        return [
            Entry(self.stream, text(eid), fields_text(fields))
            for _, entries in reply or []
            for eid, fields in entries
            if fields is not None
        ]

    async def claim(self, count: int) -> list[Entry]:
        """Entries other consumers left pending longer than the visibility timeout."""
        from redis.exceptions import ResponseError

        idle_ms = int(self.settings.visibility_s * 1000)
        try:
            reply: Any = await self.client.xautoclaim(
                self.stream, self.group, self.consumer, idle_ms, "0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.create()
            return []
        return [
            Entry(self.stream, text(eid), fields_text(fields))
            for eid, fields in reply[1]
            if fields is not None
        ]

    async def keep_alive(self, ids: Sequence[str]) -> None:
        """Reset the idle time of entries still being handled here (no delivery counted)."""
        if ids:
            await self.client.xclaim(
                self.stream, self.group, self.consumer, 0, list(ids), justid=True
            )

    def counter(self, entry_id: str, *, claimed: bool) -> Attempts:
        """The attempt counter of one delivery of `entry_id` (see `Attempts`)."""
        return Attempts(self, entry_id, claimed)

    async def ack(
        self, entry_id: str, dead_letter: Mapping[str, str] | None = None, *, forget: bool = True
    ) -> str | None:
        """Acknowledge (and forget the attempts); with `dead_letter`, add it in the same MULTI.

        `forget=False` (nothing was counted for this entry) is a bare XACK.
        """
        if dead_letter is None and not forget:
            await self.client.xack(self.stream, self.group, entry_id)
            return None
        async with self.client.pipeline(transaction=True) as pipe:
            if dead_letter is not None:
                pipe.xadd(
                    self.settings.key(DEAD_LETTERS),
                    xadd_fields(dead_letter),
                    maxlen=self.settings.maxlen,
                    approximate=True,
                )
            pipe.xack(self.stream, self.group, entry_id)
            pipe.hdel(self.attempts_key, entry_id)
            replies = await pipe.execute()
        return text(replies[0]) if dead_letter is not None else None


class Attempts:
    """Numbers the attempts at one entry across processes, at no cost on the common path.

    Redis counts deliveries (XREADGROUP, XAUTOCLAIM: `times_delivered`), and a
    delivery's first attempt is implied by it; every other attempt (a retry,
    or any attempt of a claimed delivery) is recorded first in the group's
    hash (`HSET`).  A claimed delivery continues after the larger of the
    two, so the attempt of a consumer that died counts: a fresh entry that
    succeeds at once costs no round trip beyond XREADGROUP and XACK.
    """

    def __init__(self, group: Group, entry_id: str, claimed: bool) -> None:
        self.group = group
        self.entry_id = entry_id
        self.claimed = claimed
        self.recorded = False
        self.number = 0

    async def before(self) -> int:
        """Attempts made before this delivery (0 for a fresh entry)."""
        if not self.claimed:
            return 0
        g = self.group
        async with g.client.pipeline(transaction=False) as pipe:
            pipe.hget(g.attempts_key, self.entry_id)
            pipe.xpending_range(g.stream, g.group, self.entry_id, self.entry_id, 1)
            found, pending = await pipe.execute()
        delivered = int(pending[0]["times_delivered"]) if pending else 1
        self.number = max(int(found) if found is not None else 0, delivered - 1)
        return self.number

    async def next(self) -> int:
        """The number of the attempt about to start (recorded unless implied)."""
        self.number += 1
        if self.claimed or self.number > 1:
            await self.group.client.hset(self.group.attempts_key, self.entry_id, self.number)
            self.recorded = True
        return self.number


async def publish(
    client: Redis, settings: StreamSettings, stream: str, fields: Mapping[str, str]
) -> str:
    """Append to `stream`, trimming it to about `maxlen` entries; the entry id."""
    entry = await client.xadd(stream, xadd_fields(fields), maxlen=settings.maxlen, approximate=True)
    return text(entry)


def xadd_fields(fields: Mapping[str, str]) -> Any:
    """As redis-py's (over-narrow) annotation of XADD fields wants them."""
    return dict(fields)


# -- dead letters ---------------------------------------------------------------------------
def dead_letter_fields(
    event_id: str,
    topic: str,
    handler: str,
    payload_json: str,
    headers: Mapping[str, str],
    error: str,
    attempts: int,
) -> dict[str, str]:
    return {
        "event_id": event_id,
        "topic": topic,
        "handler": handler,
        "payload": payload_json,
        "headers": json.dumps(dict(headers), sort_keys=True),
        "error": error,
        "attempts": str(attempts),
        "created_at": repr(time.time()),
    }
