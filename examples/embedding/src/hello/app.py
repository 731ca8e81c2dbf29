"""An `--app` for `oneiric run`: an async def, awaited on the runtime's own loop.

oneiric run --unsigned-plan golden/dev.plan.json --app hello.app:serve
"""

from __future__ import annotations

import anyio
from oneiric import Supervisor
from oneiric.protocols import Cache


async def serve(supervisor: Supervisor) -> None:
    cache = supervisor.handle("adapter:cache", Cache)
    cache.api.set("served", b"yes")
    print(f"app: {cache.api.get('served')!r} from {cache.provider}", flush=True)
    while not supervisor.stopping.is_set():
        await anyio.sleep(0.05)
