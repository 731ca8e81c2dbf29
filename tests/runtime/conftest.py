"""Runtime test fixtures: the asyncio backend and a clean component registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import rtcomponents


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_registry() -> None:
    rtcomponents.LIVE.clear()
    rtcomponents.EVENTS.clear()


class Callers:
    """N real threads calling `call()` in a loop, recording every result and failure."""

    def __init__(self, n: int, call: Callable[[], Any]) -> None:
        self.results: list[list[Any]] = [[] for _ in range(n)]
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i, call)) for i in range(n)]

    def _loop(self, index: int, call: Callable[[], Any]) -> None:
        while not self._stop.is_set():
            try:
                self.results[index].append(call())
                time.sleep(0.0005)
            except Exception as exc:
                self.failures.append(exc)

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    @property
    def total(self) -> int:
        return sum(len(r) for r in self.results)


@pytest.fixture
def callers() -> type[Callers]:
    return Callers
