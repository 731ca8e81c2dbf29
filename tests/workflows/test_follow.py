"""`engine.follow`: the flow engine per plan of a runtime that swaps live (`oneiric run`, `worker`).

A real `Runtime` swapped between two plans and a real `redis-server` stopped
during a swap: the runtime goes on, the new plan's engine opens when the broker
is back, and the older plan's engine closes once the running one is open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from oneiric._flows.context import Following
from oneiric._flows.engine import follow
from oneiric._flows.store import FlowStore
from oneiric._lifecycle.runtime import Runtime
from servers import Server, redis_server
from test_events import handler
from wfkit import build_plan


@pytest.fixture
def redis() -> Iterator[Server]:
    yield from redis_server(aof=True)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    """Wait for `condition()`; a failure names `what` it waited for."""
    with anyio.move_on_after(timeout_s):
        while not condition():
            await anyio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.anyio
async def test_a_swap_while_the_broker_is_down_opens_its_engine_when_it_returns(
    tmp_path: Path, redis: Server
) -> None:
    url = f"redis://127.0.0.1:{redis.port}/0"
    one, _ = build_plan(tmp_path / "one", handler("h", "order.done"))
    two, _ = build_plan(tmp_path / "two", handler("h2", "order.paid"))
    store = FlowStore(tmp_path / "state")
    failures: list[str] = []
    swapped = anyio.Event()

    async def next_swap() -> None:
        nonlocal swapped
        await swapped.wait()
        swapped = anyio.Event()

    runtime = Runtime()
    await runtime.apply(one)
    engines = Following(lambda: runtime.plan)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: follow(
                    runtime,
                    engines,
                    lambda: store,
                    next_swap,
                    events_url=url,
                    failed=lambda error, wait_s: failures.append(str(error)),
                )
            )
            await until(lambda: set(engines.contexts) == {one.digest}, "plan one's engine")
            older = engines.contexts[one.digest or ""]

            redis.stop()
            await runtime.apply(two)
            swapped.set()
            await until(lambda: len(failures) >= 3, "retries of plan two's engine")
            assert "is unreachable" in failures[0], failures
            assert set(engines.contexts) == {one.digest}  # kept while two's cannot open
            assert engines() is older  # the flow actions act on the newest engine open

            redis.start()
            await until(lambda: set(engines.contexts) == {two.digest}, "two open, one closed")
            context = engines()
            assert context is not None
            assert context.plan is two
            queued = await context.emitter.emit("order.paid", {"n": 1})
            assert queued.as_json()["queued"] is True
            group.cancel_scope.cancel()
    finally:
        await runtime.stop()
        store.close()
