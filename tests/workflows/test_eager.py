"""Eager start of sibling calls (`oneiric._flows.eager`): task semantics, no scheduling."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

import anyio
import pytest
from oneiric._flows import eager

pytestmark = pytest.mark.anyio
T = TypeVar("T")
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def stepped(coro: Coroutine[Any, Any, T]) -> T | eager.Later[T]:
    """For `Starter.map`: a coroutine's first step; the rest later if it suspends."""
    try:
        step = coro.send(None)
    except StopIteration as stop:
        return stop.value
    return eager.Later(eager.resume(coro, step))


async def warm(starter: eager.Starter, n: int) -> None:
    """The first calls run as plain tasks and start `n` workers; wait until they park."""

    async def nothing() -> None:
        await asyncio.sleep(0)

    await starter.map(stepped, [nothing() for _ in range(n)])
    await asyncio.sleep(0)


async def test_a_coroutine_that_does_not_suspend_costs_no_task_and_sees_its_own() -> None:
    starter = eager.Starter()
    await warm(starter, 1)
    caller = asyncio.current_task()
    seen: list[asyncio.Task[Any] | None] = []

    async def quick(i: int) -> int:
        seen.append(asyncio.current_task())
        VAR.set(f"set by {i}")
        return i * 2

    VAR.set("caller's")
    tasks = len(asyncio.all_tasks())
    loop = asyncio.get_running_loop()
    before = len(loop._ready)  # type: ignore[attr-defined]
    results = await starter.map(stepped, [quick(i) for i in range(5)])
    assert results == [0, 2, 4, 6, 8]
    assert len(asyncio.all_tasks()) == tasks  # no task was created
    assert len(loop._ready) == before  # type: ignore[attr-defined]  # nothing scheduled
    assert all(isinstance(t, asyncio.Task) and t is not caller for t in seen)
    assert asyncio.current_task() is caller
    assert VAR.get() == "caller's"  # each ran in a copy of the caller's context


async def test_a_suspending_coroutine_goes_on_in_the_task_its_first_step_saw() -> None:
    starter = eager.Starter()
    await warm(starter, 3)
    caller = asyncio.current_task()

    async def twice(i: int) -> tuple[bool, str]:
        first = asyncio.current_task()
        VAR.set(f"mine {i}")
        await asyncio.sleep(0.01)
        return asyncio.current_task() is first, VAR.get()

    async def own_timeout() -> str:
        # Entered before the first suspension: it must cancel this coroutine's task only.
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(10)
        except TimeoutError:
            return "timed out"
        return "not reached"

    async def cancel_scope() -> bool:
        with anyio.move_on_after(0.05) as scope:
            await anyio.sleep(10)
        return scope.cancelled_caught

    results = await starter.map(stepped, [twice(1), own_timeout(), cancel_scope(), twice(2)])
    assert results == [(True, "mine 1"), "timed out", True, (True, "mine 2")]
    assert asyncio.current_task() is caller
    assert caller is not None
    assert caller.cancelling() == 0


async def test_calls_without_a_worker_run_as_plain_tasks_and_workers_grow_to_the_need() -> None:
    starter = eager.Starter()
    tasks = len(asyncio.all_tasks())

    async def value(i: int) -> int:
        await asyncio.sleep(0)
        return i

    workers = []
    for _ in range(6):
        assert await starter.map(stepped, [value(i) for i in range(4)]) == [0, 1, 2, 3]
        await asyncio.sleep(0)
        workers.append(len(asyncio.all_tasks()) - tasks)
    assert workers == [1, 2, 3, 4, 4, 4]  # one more a call while some calls had none


async def test_cancelling_map_cancels_and_awaits_the_calls_that_wait() -> None:
    starter = eager.Starter()
    await warm(starter, 2)
    ended: list[str] = []

    async def hangs(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # cleanup that suspends: awaited before map returns
            ended.append(name)
            raise

    async def quick() -> str:
        return "done"

    gathering = asyncio.ensure_future(starter.map(stepped, [hangs("a"), quick(), hangs("b")]))
    await asyncio.sleep(0.05)
    gathering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gathering
    assert sorted(ended) == ["a", "b"]
    # Under an anyio cancel scope too (its cancellation is recognised as its own).
    await warm(starter, 2)
    with anyio.move_on_after(0.05) as scope:
        await starter.map(stepped, [asyncio.sleep(3600), quick(), asyncio.sleep(3600)])
    assert scope.cancelled_caught


async def test_a_coroutine_that_cancels_its_own_task_first_is_cancelled_at_its_suspension() -> None:
    starter = eager.Starter()
    await warm(starter, 1)
    seen: list[str] = []

    async def cancels_itself() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "not reached"

    async def sibling() -> str:
        await asyncio.sleep(0)
        seen.append("sibling")
        return "fine"

    with pytest.raises(BaseExceptionGroup) as caught:
        await starter.map(stepped, [cancels_itself(), sibling()])
    assert [type(e) for e in caught.value.exceptions] == [asyncio.CancelledError]
    assert sorted(seen) == ["cancelled", "sibling"]
    # Another call: the cancelled worker is not reused.
    assert await starter.map(stepped, [sibling(), sibling()]) == ["fine", "fine"]


async def test_errors_come_out_together_once_every_call_is_done() -> None:
    starter = eager.Starter()
    await warm(starter, 1)
    done: list[str] = []

    async def boom() -> None:
        raise KeyError("first step")

    async def later() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("later")

    async def ok() -> None:
        await asyncio.sleep(0.02)
        done.append("ok")

    with pytest.raises(BaseExceptionGroup) as caught:
        await starter.map(stepped, [boom(), later(), ok()])
    assert [type(e) for e in caught.value.exceptions] == [KeyError, ValueError]
    assert done == ["ok"]
