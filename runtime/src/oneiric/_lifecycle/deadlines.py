"""Sync calls under per-call deadlines, many of them in one worker thread.

Activating a plan calls a factory and a health check per component; most are
cheap sync calls.  Handing each to its own worker thread costs two thread
switches per call (seconds for 1,000 components on a loaded machine), so the
runtime runs a whole sequence of them in ONE worker thread (`DeadlineRunner`),
and the event loop watches the call in progress: each `call` states its
deadline, and a watchdog task sleeps until the earliest deadline that could
pass.

Python cannot interrupt a sync call.  When one overruns its deadline, the
event loop stops waiting: `run` raises `Overrun` naming the call at once,
and the worker thread is abandoned.  It finishes the hung call whenever that
returns; then `call` refuses to start another one, and `abandoned` tells
the worker to clean up what the late call made instead of handing it over.  So a sync hang costs
one parked thread, never the caller's deadline.  A call that returns after
its deadline, before the watchdog noticed, is an overrun too.

Every abandoned call still running is listed by `hung_calls()` until it
returns: at exit `oneiric run` reports them as left uncleaned and does not
wait for them (Python would otherwise join their threads, for as long as the
hung call takes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio

T = TypeVar("T")
# How often the watchdog looks at the call in progress: the most an overrun goes unnoticed.
WATCHDOG_POLL_S = 0.05


_hung: dict[int, str] = {}  # abandoned calls still running: id of their token → what
_hung_lock = threading.Lock()


def hung_calls() -> list[str]:
    """What abandoned calls are still running (e.g. "x: activation exceeded 5s")."""
    with _hung_lock:
        return sorted(_hung.values())


class Abandonable:
    """One sync call that the event loop may stop waiting for: `abandon()` lists it
    in `hung_calls()` until it returns (`done()`, called by the worker)."""

    __slots__ = ("_finished", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self._finished = False

    def abandon(self) -> None:
        with _hung_lock:
            if not self._finished:
                _hung[id(self)] = self.what

    def done(self) -> None:
        with _hung_lock:
            self._finished = True
            _hung.pop(id(self), None)


async def run_abandonable(fn: Callable[[], T], what: str) -> T:
    """`fn()` in a worker thread; if the caller is cancelled (a timeout) the thread is
    abandoned and the call listed in `hung_calls()` until it returns."""
    token = Abandonable(what)

    def call() -> T:
        try:
            return fn()
        finally:
            token.done()

    try:
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        token.abandon()
        raise


class Overrun(Exception):
    """A call ran past its deadline; the message names it (e.g. "x: activation exceeded 5s").

    `result` is what a late call returned (None if the watchdog gave up first), for cleanup.
    """

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class Abandoned(Exception):
    """The runner was abandoned after an overrun: the worker must stop."""


class DeadlineRunner:
    """Runs `work` in one worker thread; `work` makes each bounded sync call through `call`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._what = ""
        self._abandoned = False
        self._token: Abandonable | None = None  # the call in progress

    @property
    def abandoned(self) -> bool:
        """True once the event loop gave up on an overrun call (never set between calls)."""
        return self._abandoned

    # -- in the worker thread ---------------------------------------------------------
    def call(self, fn: Callable[[], T], timeout: float, what: str) -> T:
        """`fn()`, which must finish within `timeout` s; `what` names the overrun."""
        with self._lock:
            if self._abandoned:
                raise Abandoned(what)
            self._deadline = time.monotonic() + timeout
            self._what = f"{what} exceeded {timeout:g}s"
            token = self._token = Abandonable(self._what)
        try:
            result = fn()
        finally:
            token.done()
            with self._lock:
                late = self._deadline is not None and time.monotonic() > self._deadline
                self._deadline = None
                self._token = None
        if late:
            raise Overrun(self._what, result)
        return result

    # -- in the event loop ------------------------------------------------------------
    async def run(self, work: Callable[[], T]) -> T:
        """`work()` in a worker thread; `Overrun` as soon as one of its calls overruns."""
        outcome: list[T] = []
        failure: list[BaseException] = []
        try:
            await self._watch(work, outcome, failure)
        except anyio.get_cancelled_exc_class():  # the caller gave up (shutdown deadline)
            with self._lock:
                self._abandoned = True
                if self._token is not None:
                    self._token.abandon()
            raise
        if failure:
            raise failure[0]
        return outcome[0]

    async def _watch(
        self, work: Callable[[], T], outcome: list[T], failure: list[BaseException]
    ) -> None:
        async with anyio.create_task_group() as tg:

            async def worker() -> None:
                try:
                    outcome.append(await anyio.to_thread.run_sync(work, abandon_on_cancel=True))
                except Exception as exc:
                    failure.append(exc)
                tg.cancel_scope.cancel()

            tg.start_soon(worker)
            while True:
                with self._lock:
                    deadline, what = self._deadline, self._what
                    now = time.monotonic()
                    if deadline is not None and now > deadline:
                        self._abandoned = True
                        if self._token is not None:
                            self._token.abandon()
                        failure.append(Overrun(what))
                        tg.cancel_scope.cancel()
                        break
                wait = WATCHDOG_POLL_S if deadline is None else deadline - now + 0.001
                await anyio.sleep(min(wait, WATCHDOG_POLL_S))


async def run_each(
    items: Sequence[T],
    step: Callable[[DeadlineRunner, T], bool],
    overrun: Callable[[T, str], None],
) -> int:
    """`step(runner, item)` for each item in order, in worker threads; stop at a declined one.

    `step` makes its bounded calls through `runner.call` and returns False to
    decline an item (one the caller must handle on the event loop).  When an
    item's call overruns, `overrun(item, message)` runs on the event loop and
    the following items continue in a fresh worker.  Returns the index of the
    declined item, or `len(items)` when every item was stepped.
    """
    start = 0
    while start < len(items):
        runner = DeadlineRunner()
        at = [start]  # the index of the item in progress

        def work(runner: DeadlineRunner = runner, at: list[int] = at, start: int = start) -> None:
            for index in range(start, len(items)):
                at[0] = index
                if not step(runner, items[index]) or runner.abandoned:
                    return
            at[0] = len(items)

        try:
            await runner.run(work)
        except Overrun as exc:
            overrun(items[at[0]], str(exc))
            start = at[0] + 1
            continue
        return at[0]
    return len(items)
