"""The bare baseline of bench_scale.py: one consumer process, redis-py asyncio only.

XREADGROUP (32 at a time, as `oneiric event consume --prefetch 32`) then one
XACK per entry, until SIGTERM.

    python bench/stream_bare.py URL STREAM GROUP CONSUMER READY_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import redis.asyncio as aioredis


async def consume(url: str, stream: str, group: str, consumer: str, ready: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.ping()
    Path(ready).touch()
    while True:
        reply = await client.xreadgroup(group, consumer, {stream: ">"}, count=32, block=1000)
        for _, entries in reply or []:
            for eid, _fields in entries:
                await client.xack(stream, group, eid)


if __name__ == "__main__":
    asyncio.run(consume(*sys.argv[1:6]))
