"""The demo shop's application loop: `oneiric run --app shopdemo.app:count_visits`.

The runtime calls `count_visits(supervisor)` in a thread once it is ready.  It
counts visits in the `adapter:cache` component through its handle, as
application code does, and prints a line whenever a different instance
answers, so a live swap is visible from outside: the new instance starts
with an empty cache.  It returns when the runtime stops.
"""

from __future__ import annotations

import time
from typing import Any

CACHE = "adapter:cache"


def count_visits(supervisor: Any) -> None:
    cache = supervisor.handle(CACHE)
    calls = failed = counted = 0
    answered: tuple[str | None, int | None] | None = None
    while not supervisor.stopping.is_set():
        try:
            with cache.use() as instance:  # one instance for the read and the write
                visits = instance.get("visits") or 0
                instance.set("visits", visits + 1)
                who = (cache.provider, cache.generation)
                kind = f"{type(instance).__module__}.{type(instance).__qualname__}"
            calls += 2
        except RuntimeError:  # oneiric.ComponentUnavailable: nothing bound
            if supervisor.stopping.is_set():
                break
            failed += 1
            time.sleep(0.01)
            continue
        if who != answered:
            before = ""
            if answered is not None:
                before = f"; before it, {answered[0]!r} generation {answered[1]} counted {counted}"
            answered = who
            print(
                f"app: {CACHE} answered by provider {who[0]!r} (generation {who[1]}, {kind}): "
                f"visit {visits + 1} there{before}",
                flush=True,
            )
        counted = visits + 1
        time.sleep(0.01)
    print(f"app: stopped after {calls} cache calls, {failed} failed", flush=True)
