"""NATS (with JetStream) and Redis Streams messaging adapters against real local servers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anyio
import pytest
from nats.aio.msg import Msg
from oneiric._lifecycle.runtime import Runtime
from oneiric.adapters.nats import NatsMessaging, connect
from oneiric.adapters.pool import Unavailable
from oneiric.adapters.redis_streams import RedisStreams
from planbuild import component, plan
from servers import Server, free_port, nats_server, redis_server

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def nats() -> Iterator[Server]:
    yield from nats_server()


@pytest.fixture(scope="module")
def redis() -> Iterator[Server]:
    yield from redis_server()


def nats_url(server: Server) -> str:
    return f"nats://127.0.0.1:{server.port}"


async def nats_client(server: Server) -> NatsMessaging:
    return await connect(
        servers=[nats_url(server)],
        timeout=timedelta(seconds=1),
        reconnect_wait=timedelta(seconds=0),
    )


async def eventually(check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await anyio.sleep(0.1)


async def test_nats_publish_subscribe_and_request_reply(nats: Server) -> None:
    bus = await nats_client(nats)
    assert await bus.health()
    got: list[bytes] = []

    async def collect(msg: Msg) -> None:
        got.append(msg.data)

    async def answer(msg: Msg) -> None:
        await msg.respond(msg.data.upper())

    sub = await bus.subscribe("orders.created", collect, queue="workers")
    await bus.subscribe("echo", answer)
    for i in range(5):
        await bus.publish("orders.created", b"o%d" % i, headers={"trace": "t1"})
    assert await bus.request("echo", b"hello") == b"HELLO"
    await eventually(lambda: _true(len(got) == 5))
    assert got == [b"o0", b"o1", b"o2", b"o3", b"o4"]
    await sub.unsubscribe()
    with pytest.raises(LookupError, match="no responder on 'nobody'"):
        await bus.request("nobody", b"?")
    await bus.aclose()
    with pytest.raises(Unavailable, match="closed"):
        await bus.publish("x", b"")


async def _true(value: bool) -> bool:
    return value


async def test_nats_jetstream_stores_until_fetched(nats: Server) -> None:
    bus = await nats_client(nats)
    await bus.stream("ORDERS", ["jobs.>"])
    first = await bus.js_publish("jobs.ship", b"one")
    second = await bus.js_publish("jobs.ship", b"two")
    assert second == first + 1
    assert await bus.fetch("jobs.ship", durable="shipper", batch=10) == [b"one", b"two"]
    assert await bus.fetch("jobs.ship", durable="shipper", batch=10) == []  # acknowledged
    with pytest.raises(LookupError, match="no JetStream stream"):
        await bus.js_publish("unstored.subject", b"x")
    await bus.aclose()


async def test_nats_server_going_away_and_coming_back(nats: Server) -> None:
    bus = await nats_client(nats)
    assert await bus.health()
    nats.stop()
    try:
        await eventually(lambda: _not(bus.health()), seconds=10)
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"NATS at nats://127\.0\.0\.1:\d+: disconnected"):
            await bus.publish("orders.created", b"lost?")
        assert time.monotonic() - started < 0.5
    finally:
        nats.start()
    await eventually(bus.health)
    await bus.publish("orders.created", b"after")
    await bus.aclose()


async def _not(check: Any) -> bool:
    return not await check


async def test_nats_unreachable_at_connect_is_a_clear_error() -> None:
    with pytest.raises(Unavailable, match=r"NATS at nats://127\.0\.0\.1:\d+"):
        await connect(
            servers=[f"nats://127.0.0.1:{free_port()}"], connect_timeout=timedelta(seconds=1)
        )


async def test_redis_streams_publish_read_ack(redis: Server) -> None:
    bus = RedisStreams(url=f"redis://127.0.0.1:{redis.port}/0", timeout=timedelta(seconds=1))
    assert await bus.health()
    assert await bus.read("orders", "shippers", "a", block=timedelta(milliseconds=10)) == []
    await bus.publish("orders", b"\x00binary", headers={"trace": "t1"})
    [message] = await bus.read("orders", "shippers", "a")
    assert message.data == b"\x00binary"
    assert message.headers == {"trace": "t1"}
    await bus.ack("orders", "shippers", message.id)
    assert await bus.read("orders", "shippers", "b", block=timedelta(milliseconds=10)) == []
    await bus.aclose()


async def test_redis_streams_server_going_away_and_coming_back(redis: Server) -> None:
    bus = RedisStreams(url=f"redis://127.0.0.1:{redis.port}/0", timeout=timedelta(seconds=1))
    await bus.publish("orders", b"before")
    redis.stop()
    try:
        assert await bus.health() is False
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"Redis at redis://127\.0\.0\.1:\d+/0"):
            await bus.publish("orders", b"lost?")
        assert time.monotonic() - started < 2
    finally:
        redis.start()
    await eventually(bus.health)
    await bus.publish("orders", b"after")
    await bus.aclose()


async def test_live_swap_nats_to_redis_streams_under_load(nats: Server, redis: Server) -> None:
    first = component(
        "adapter:bus",
        "nats",
        impl="oneiric.adapters.nats:connect",
        config={"servers": [nats_url(nats)]},
    )
    second = component(
        "adapter:bus",
        "redis",
        impl="oneiric.adapters.redis_streams:RedisStreams",
        config={"url": f"redis://127.0.0.1:{redis.port}/0"},
    )
    for c in (first, second):
        del c["config"]["tag"]
    runtime = Runtime()
    await runtime.apply(plan(first))
    bus = runtime.handle("adapter:bus")
    sent: list[str] = []
    failures: list[BaseException] = []
    stop = anyio.Event()

    async def publisher(n: int) -> None:
        while not stop.is_set():
            try:
                await bus.publish("orders", b"m%d" % n)
                sent.append(bus.provider or "")
            except Exception as exc:
                failures.append(exc)
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(publisher, n)
        await anyio.sleep(0.3)
        await runtime.apply(plan(second))
        await anyio.sleep(0.3)
        stop.set()
    assert failures == []
    assert {"nats", "redis"} <= set(sent)
    assert len(sent) > 50
    await runtime.stop()
