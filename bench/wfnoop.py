"""No-op task and handler implementations for bench_workflows.py."""

from __future__ import annotations

from typing import Any


async def noop(input: Any, upstream: dict[str, Any]) -> None:
    return None


def noop_sync(input: Any, upstream: dict[str, Any]) -> None:
    return None


async def handle(event: Any) -> None:
    return None
