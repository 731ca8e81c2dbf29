"""Status files of the long-running processes beside the runtime (`snapshots.FLEET`).

`oneiric event consume` writes STATE/consumers/NAME.json, `oneiric worker`
STATE/workers/NAME.json, `oneiric workflow serve` STATE/runtimes/OWNER.json and
`oneiric task serve` STATE/schedulers/OWNER.json, every second, through
`heartbeat`; `oneiric status`, `/status` and the status
page read them back with `snapshots.fleet`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oneiric._lifecycle import snapshots


async def heartbeat(path: Path, document: Callable[[], dict[str, Any]]) -> None:
    """Write `document()` to `path` every second until cancelled, then once more, stopped.

    Each write carries `pid`, `pid_start` (so a reused pid is not taken for the
    process), `state` (running unless `document` says otherwise) and
    `written_at`, the heartbeat a reader judges staleness by.
    """
    import anyio

    base = {"pid": os.getpid(), "pid_start": snapshots.process_start(os.getpid())}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            snapshots.write_json(
                path, base | {"state": "running"} | document() | {"written_at": time.time()}
            )
            await anyio.sleep(1)
    finally:
        snapshots.write_json(
            path, base | document() | {"state": "stopped", "written_at": time.time()}
        )


def links(store: Any, workflows: Any) -> dict[str, Any]:
    """The connections of a flow host: its PostgreSQL store and its node dispatcher, if any."""
    found = {}
    for role, holder in (("store", store), ("tasks", getattr(workflows, "tasks", None))):
        link = getattr(holder, "link", None)
        if link is not None:
            found[role] = link.as_json()
    return found
