"""NATS messaging (nats-py): publish/subscribe, request/reply, and JetStream streams.

Extra: `oneiric-runtime[nats]`.  Async: the factory `connect(...)` connects (bounded by
`connect_timeout`) and returns a `NatsMessaging`.  The client reconnects by itself when the
server comes back; while it is disconnected, calls fail at once with
`oneiric.adapters.pool.Unavailable` instead of buffering.  Requests and flushes are bounded
by `timeout`.  JetStream (`stream`, `js_publish`, `fetch`) needs a server started with `-js`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import anyio
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import StreamConfig

from oneiric.adapters.pool import Unavailable


async def connect(
    *,
    servers: Sequence[str] = ("nats://127.0.0.1:4222",),
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    client_name: str = "oneiric",
    connect_timeout: timedelta = timedelta(seconds=2),
    timeout: timedelta = timedelta(seconds=5),
    reconnect_wait: timedelta = timedelta(seconds=1),
    pending_bytes: int = 2 * 1024 * 1024,
) -> NatsMessaging:
    name = f"NATS at {', '.join(servers)}"
    client = Client()

    async def quiet(*_: Any) -> None:
        """Disconnections are reported by `health()` and by failing calls, not printed."""

    try:
        # Bounded: with endless reconnects allowed, nats-py would retry a first connect forever.
        with anyio.fail_after(connect_timeout.total_seconds() + 1):
            await client.connect(
                servers=list(servers),
                user=user,
                password=password,
                token=token,
                name=client_name,
                connect_timeout=max(1, round(connect_timeout.total_seconds())),
                reconnect_time_wait=max(0, round(reconnect_wait.total_seconds())),
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                pending_size=pending_bytes,
                error_cb=quiet,
                flush_timeout=timeout.total_seconds(),
            )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        await client.close()
        reason = str(exc) or f"no connection within {connect_timeout.total_seconds():g}s"
        raise Unavailable(f"{name}: {reason}") from None
    return NatsMessaging(client, name, timeout.total_seconds())


class NatsMessaging:
    """A connected client: made by `connect(...)`, closed by `aclose()`."""

    def __init__(self, client: Client, name: str, timeout: float) -> None:
        self._nc = client
        self.name = name
        self._timeout = timeout
        self._js = client.jetstream(timeout=timeout)

    def _connected(self) -> Client:
        if not self._nc.is_connected:
            state = "closed" if self._nc.is_closed else "disconnected (reconnecting)"
            raise Unavailable(f"{self.name}: {state}")
        return self._nc

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        await self._connected().publish(subject, data, headers=headers)

    async def request(self, subject: str, data: bytes, timeout: timedelta | None = None) -> bytes:
        """The first reply to `data` on `subject`; `TimeoutError` when none comes in time."""
        limit = timeout.total_seconds() if timeout else self._timeout
        try:
            reply = await self._connected().request(subject, data, timeout=limit)
        except nats.errors.NoRespondersError:
            raise LookupError(f"{self.name}: no responder on {subject!r}") from None
        except nats.errors.TimeoutError:
            raise TimeoutError(f"{self.name}: no reply on {subject!r} within {limit:g}s") from None
        return reply.data

    async def subscribe(
        self, subject: str, handler: Callable[[Msg], Awaitable[None]], queue: str = ""
    ) -> Subscription:
        """Call `handler` with each message on `subject` (one member of `queue` per message)."""
        return await self._connected().subscribe(subject, queue=queue, cb=handler)

    async def stream(self, name: str, subjects: Sequence[str]) -> None:
        """Make sure the JetStream stream `name` exists and captures `subjects`."""
        self._connected()
        config = StreamConfig(name=name, subjects=list(subjects))
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self._js.update_stream(config)

    async def js_publish(self, subject: str, data: bytes) -> int:
        """Publish to JetStream and wait for the server's ack; the stream sequence number."""
        self._connected()
        try:
            ack = await self._js.publish(subject, data, timeout=self._timeout)
        except nats.js.errors.NoStreamResponseError:
            raise LookupError(f"{self.name}: no JetStream stream captures {subject!r}") from None
        return int(ack.seq)

    async def fetch(self, subject: str, durable: str, batch: int = 10) -> list[bytes]:
        """Up to `batch` stored messages for the durable consumer `durable`, acknowledged."""
        self._connected()
        consumer = await self._js.pull_subscribe(subject, durable=durable)
        try:
            messages = await consumer.fetch(batch, timeout=self._timeout)
        except nats.errors.TimeoutError:
            return []
        finally:
            await consumer.unsubscribe()
        for message in messages:
            await message.ack()
        return [message.data for message in messages]

    async def health(self) -> bool:
        """A real round trip: PING/PONG within the timeout."""
        if not self._nc.is_connected:
            return False
        try:
            await self._nc.flush(timeout=max(1, round(self._timeout)))
        except (nats.errors.Error, OSError):
            return False
        return True

    async def aclose(self) -> None:
        await self._nc.close()
