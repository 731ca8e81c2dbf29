"""The HTTP client adapter against a real HTTP server on 127.0.0.1 (tests/runtime/httpd.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import anyio
import pytest
from oneiric._lifecycle.runtime import Runtime
from oneiric.adapters.http import CircuitOpen, HttpClient
from oneiric.adapters.pool import Unavailable
from planbuild import component, plan
from servers import Server, http_server

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

FAST = timedelta(milliseconds=10)


@pytest.fixture(scope="module")
def web() -> Iterator[Server]:
    yield from http_server("one")


@pytest.fixture(scope="module")
def web2() -> Iterator[Server]:
    yield from http_server("two")


def client(server: Server, **overrides: object) -> HttpClient:
    settings: dict[str, object] = {
        "base_url": f"http://127.0.0.1:{server.port}",
        "backoff": FAST,
        "timeout": timedelta(seconds=1),
        "health_path": "/ok",
    }
    settings.update(overrides)
    return HttpClient(**settings)  # type: ignore[arg-type]


async def test_requests_and_retries_with_backoff(web: Server) -> None:
    http = client(web, retries=3, backoff=timedelta(milliseconds=50))
    assert await http.health()
    assert (await http.get("/ok")).json() == {"server": "one"}
    assert (await http.post("/echo", json={"a": 1})).json() == {"a": 1}
    started = time.monotonic()
    answer = await http.get("/flaky/a/2")  # 503, 503, then 200
    assert answer.status_code == 200
    assert answer.json() == {"count": 3}
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff 50 ms, then 100 ms
    spent = await http.get("/flaky/b/9")  # retries spent: the last 503 is the answer
    assert spent.status_code == 503
    assert spent.json() == {"count": 4}
    posted = await http.request("POST", "/echo", content=b"x")
    assert posted.content == b"x"
    await http.aclose()


async def test_timeouts_are_bounded_and_not_retried_for_post(web: Server) -> None:
    http = client(web, retries=1, timeout=timedelta(milliseconds=300))
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"GET /slow timed out after 2 attempt\(s\)"):
        await http.get("/slow")
    assert time.monotonic() - started < 1.5
    await http.aclose()


async def test_circuit_breaker_opens_and_recovers(web: Server) -> None:
    http = client(web, retries=0, failure_threshold=3, reset_after=timedelta(milliseconds=300))
    for _ in range(3):
        assert (await http.get("/fail")).status_code == 500
    assert http.breaker.state == "open"
    with pytest.raises(CircuitOpen, match="circuit open after 3 failures in a row"):
        await http.get("/ok")
    await anyio.sleep(0.35)
    assert http.breaker.state == "half-open"
    assert (await http.get("/ok")).status_code == 200  # the trial call closes it
    assert http.breaker.state == "closed"
    await http.aclose()


async def test_server_going_away_and_coming_back(web: Server) -> None:
    http = client(web, retries=1, failure_threshold=2, reset_after=timedelta(milliseconds=200))
    assert await http.health()
    web.stop()
    try:
        assert await http.health() is False
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"HTTP http://127\.0\.0\.1:\d+: GET /ok failed"):
            await http.get("/ok")
        with pytest.raises(Unavailable):
            await http.get("/ok")
        with pytest.raises(CircuitOpen):  # no more waiting on a dead server
            await http.get("/ok")
        assert time.monotonic() - started < 1
    finally:
        web.start()
    assert await http.health()
    await anyio.sleep(0.25)
    assert (await http.get("/ok")).json() == {"server": "one"}
    await http.aclose()


async def test_live_swap_between_two_servers_under_load(web: Server, web2: Server) -> None:
    first, second = (
        component(
            "adapter:api",
            name,
            impl="oneiric.adapters.http:HttpClient",
            config={"base_url": f"http://127.0.0.1:{server.port}", "health_path": "/ok"},
        )
        for name, server in (("one", web), ("two", web2))
    )
    for c in (first, second):
        del c["config"]["tag"]
    runtime = Runtime()
    await runtime.apply(plan(first))
    api = runtime.handle("adapter:api")
    seen: list[str] = []
    failures: list[BaseException] = []
    stop = anyio.Event()

    async def caller() -> None:
        while not stop.is_set():
            try:
                seen.append((await api.get("/ok")).json()["server"])
            except Exception as exc:
                failures.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(caller)
        await anyio.sleep(0.3)
        await runtime.apply(plan(second))
        await anyio.sleep(0.3)
        stop.set()
    assert failures == []
    assert {"one", "two"} <= set(seen)
    assert seen[-1] == "two"
    await runtime.stop()
