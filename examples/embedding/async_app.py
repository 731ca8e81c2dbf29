"""Embedding from asyncio: `async with Runtime(plan)`, typed handles."""

from __future__ import annotations

import asyncio
from typing import Protocol

from oneiric import Runtime
from oneiric.protocols import Cache


class Greeter(Protocol):
    def greet(self, name: str) -> str: ...


async def main() -> None:
    async with Runtime("golden/dev.plan.json") as runtime:
        cache = runtime.handle("adapter:cache", Cache)  # Handle[Cache]
        greeter = runtime.handle("service:greeter", Greeter)
        await cache.until_ready(timeout=1.0)  # returns at once unless paused
        cache.api.set("visits", b"1")
        print(greeter.api.greet("ada"), "/", greeter.api.greet("ada"))
        print(f"cache {cache.provider} gen {cache.generation}: {cache.api.get('visits')!r}")


if __name__ == "__main__":
    asyncio.run(main())
