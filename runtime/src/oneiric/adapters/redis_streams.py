"""Redis Streams messaging (redis-py asyncio), on the event transport's stream primitives.

Extra: `oneiric-runtime[redis]`.  A subject is a stream (`<prefix><subject>`, trimmed to
about `maxlen` entries); `publish` appends, `read` delivers new entries to one consumer of
a consumer group, `ack` acknowledges them.  The same layout as `oneiric._flows.streams`
(the event transport), so events and messages can share a Redis.  Every call is bounded by
`timeout`; an unreachable server raises `oneiric.adapters.pool.Unavailable`, and the next
call after it is back reconnects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from oneiric._flows.streams import StreamSettings, ensure_group, publish, text
from oneiric.adapters.pool import Unavailable


@dataclass(frozen=True)
class Message:
    id: str
    data: bytes
    headers: dict[str, str]


class RedisStreams:
    def __init__(
        self,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "oneiric:msg:",
        maxlen: int = 100_000,
        timeout: timedelta = timedelta(seconds=5),
        max_connections: int = 20,
    ) -> None:
        self._settings = StreamSettings(url, prefix, maxlen)
        self.name = f"Redis at {self._settings.safe_url}"
        seconds = timeout.total_seconds()
        self._timeout = seconds
        self._client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=seconds,
            socket_timeout=seconds,
            max_connections=max_connections,
        )
        self._groups: set[tuple[str, str]] = set()

    async def _call(self, what: Any) -> Any:
        try:
            return await what
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise Unavailable(f"{self.name}: {exc}") from None

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        fields = {**(headers or {}), "data": data}
        await self._call(publish(self._client, self._settings, self._settings.key(subject), fields))  # type: ignore[arg-type]

    async def read(
        self,
        subject: str,
        group: str,
        consumer: str,
        count: int = 10,
        block: timedelta = timedelta(seconds=1),
    ) -> list[Message]:
        """New messages for `consumer` of `group` (created at the stream's end on first use)."""
        stream = self._settings.key(subject)
        if (stream, group) not in self._groups:
            await self._call(ensure_group(self._client, stream, group))
            self._groups.add((stream, group))
        wait_ms = min(int(block.total_seconds() * 1000), int(self._timeout * 1000) // 2)
        reply = await self._call(
            self._client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=wait_ms)
        )
        found = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                values = {text(k): v for k, v in fields.items()}
                data = values.pop("data", b"")
                found.append(Message(text(entry_id), data, {k: text(v) for k, v in values.items()}))
        return found

    async def ack(self, subject: str, group: str, message_id: str) -> None:
        await self._call(self._client.xack(self._settings.key(subject), group, message_id))

    async def health(self) -> bool:
        """A real round trip: PING."""
        try:
            return bool(await self._call(self._client.ping()))
        except Unavailable:
            return False

    async def aclose(self) -> None:
        await self._client.aclose()
