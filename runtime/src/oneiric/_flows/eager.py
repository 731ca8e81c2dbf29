"""Sibling calls started eagerly on asyncio: what Python 3.12's eager tasks do, on 3.11.

`Starter.map(call, items)` runs `call(item)` for each item as a task, like a
task group: all finish before it returns, their errors come out together in
an exception group, and cancelled, it cancels them and waits for them.  Each
`call(item)` runs at once, inside `map`, as the first step of a task of its
own: during it `asyncio.current_task()` is a real task, not the caller's (so a
timeout, cancel scope or task group entered there belongs to that task), and
it runs in a copy of the caller's context, as a new task's first step would.
A call that returns a value costs no task scheduling, no loop iteration and
no timer; one that must wait returns `Later(coro)`, and `coro` (which finishes
what the call began, e.g. a coroutine it stepped) goes on in that same task
and context.

On 3.11 a task cannot be created without being scheduled, so those tasks are
kept: a `_Worker` task parks on a future between jobs.  A call that returns
`Later` hands its coroutine to the worker whose task it ran under; one that
returns a value leaves the worker idle for the next.  With no idle worker at
hand (the first calls, bursts), a call runs in a plain new task, and one
worker more is started (per `map`) for later calls.  Idle workers are
cancelled with the loop's other tasks when it closes.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
K = TypeVar("K")
MAX_IDLE = 64  # workers kept parked per starter; more end after their job
_START: Any = object()  # `resume`: the coroutine has not run yet


class Later(Generic[T]):
    """What a call given to `Starter.map` returns when it must wait: `coro` finishes it."""

    __slots__ = ("coro",)

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro


class Starter:
    """Idle workers of one event loop (a new loop starts afresh)."""

    __slots__ = ("_idle", "_loop")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Worker] = []

    async def map(self, call: Callable[[K], T | Later[T]], items: Sequence[K]) -> list[T]:
        """`call(item)` for each item, each the first step of a task of its own; their
        results in order once all are done (`BaseExceptionGroup` of what any raised)."""
        loop = asyncio.get_running_loop()
        caller = asyncio.current_task(loop)
        if caller is None:  # driven outside a task: nothing to stand in for
            return _settled(
                await asyncio.gather(*(_task(call, i) for i in items), return_exceptions=True)
            )
        if self._loop is not loop:
            self._loop, self._idle = loop, []
        idle = self._idle
        results: list[Any] = []
        pending: list[int] = []
        maybe_failed = spawned = False
        worker: _Worker | None = None  # reused while calls return values
        for item in items:
            if worker is None:
                if not idle:
                    if not spawned:  # one more for later calls (it parks in `idle` once started)
                        _Worker(loop, idle)
                        spawned = True
                    pending.append(len(results))
                    results.append(loop.create_task(_task(call, item)))
                    continue
                worker = idle.pop()
            context = contextvars.copy_context()
            _leave_task(loop, caller)
            _enter_task(loop, worker.task)
            outcome: T | Later[T] | BaseException
            try:
                outcome = context.run(call, item)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                outcome = exc
                maybe_failed = True
            finally:
                _leave_task(loop, worker.task)
                _enter_task(loop, caller)
            if isinstance(outcome, Later):
                pending.append(len(results))
                results.append(worker.take(outcome.coro, context))
                worker = None
            else:
                results.append(outcome)
                if worker.task.cancelling():  # the call cancelled its task: that worker ends
                    worker = None
        if worker is not None:
            idle.append(worker)
        if pending:
            settled = await asyncio.gather(*(results[i] for i in pending), return_exceptions=True)
            for i, settled_one in zip(pending, settled, strict=True):
                results[i] = settled_one
            maybe_failed = True
        return _settled(results) if maybe_failed else results


def _settled(results: list[T | BaseException]) -> list[T]:
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise BaseExceptionGroup("unhandled errors in started calls", errors)
    return cast(list[T], results)


async def _task(call: Callable[[K], T | Later[T]], item: K) -> T:
    """`call(item)` in a plain task."""
    result = call(item)
    if isinstance(result, Later):
        return await result.coro
    return result


class _Job(asyncio.Future[Any]):
    """The outcome of a coroutine handed to a worker; cancelling it cancels the coroutine
    (through its worker's task, as cancelling a task would)."""

    def __init__(self, worker: _Worker, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._worker = worker

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        return self._worker.task.cancel(msg)


class _Worker:
    """A task that runs, one after the other, the coroutines of calls that ran under it."""

    __slots__ = ("_idle", "_job", "_wake", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, idle: list[_Worker]) -> None:
        self._idle = idle
        self._job: tuple[Coroutine[Any, Any, Any], contextvars.Context, _Job] | None = None
        self._wake: asyncio.Future[None] = loop.create_future()
        self.task = loop.create_task(self._serve(loop), name="oneiric eager start")

    def take(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> _Job:
        """Run `coro` (not started) in `context`; its outcome."""
        job = _Job(self, self.task.get_loop())
        self._job = (coro, context, job)
        if not self._wake.done():  # else this task was cancelled: the job gets that
            self._wake.set_result(None)
        return job

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            if len(self._idle) >= MAX_IDLE:
                return
            self._wake = loop.create_future()
            self._idle.append(self)
            thrown: BaseException | None = None
            try:
                await self._wake
            except asyncio.CancelledError as exc:
                if self._job is None:  # cancelled idle (the loop is closing)
                    if self in self._idle:
                        self._idle.remove(self)
                    raise
                thrown = exc  # cancelled after its call ran: the job's to handle
            assert self._job is not None
            coro, context, job = self._job
            self._job = None
            try:
                result = await resume(coro, _START, context, thrown)
            except asyncio.CancelledError as exc:  # with its message, as a task's (anyio reads it)
                asyncio.Future.cancel(job, exc.args[0] if exc.args else None)
                return
            except BaseException as exc:
                job.set_exception(exc)
                return
            job.set_result(result)
            if self.task.cancelling():  # the job swallowed a cancellation: not reused
                return


@types.coroutine
def resume(
    coro: Coroutine[Any, Any, T],
    step: Any = _START,
    context: contextvars.Context | None = None,
    thrown: BaseException | None = None,
) -> Generator[Any, Any, T]:
    """Await `coro`, whose first step already ran and yielded `step` (by default it has
    not run yet); its steps run in `context` when given.  `thrown` is thrown in at its
    first suspension (the cancellation of a task that had not run it yet)."""
    if step is _START:  # even when `thrown`: it goes on from code that already ran
        try:
            step = coro.send(None) if context is None else context.run(coro.send, None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
    if thrown is not None and isinstance(step, asyncio.Future):
        step.cancel()  # as cancelling a task does: the future it waits on first
    error = thrown
    sent: Any = None
    while True:
        if error is None:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                error = exc
        try:
            if error is None:
                step = coro.send(sent) if context is None else context.run(coro.send, sent)
            else:
                step = coro.throw(error) if context is None else context.run(coro.throw, error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
