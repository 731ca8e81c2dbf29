"""Embedding from synchronous code: `with Runtime(plan)`; the loop runs in a thread."""

from __future__ import annotations

from oneiric import Runtime
from oneiric.protocols import Cache


def main() -> None:
    with Runtime("golden/dev.plan.json") as runtime:
        cache = runtime.handle("adapter:cache", Cache)
        cache.wait_ready(timeout=1.0)  # blocks while an operator has it paused
        cache.api.set("greeting", b"hello")
        print(f"{cache.id} via {cache.provider}: {cache.api.get('greeting')!r}")


if __name__ == "__main__":
    main()
