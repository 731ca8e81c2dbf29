"""`oneiric worker`: a runtime that takes workflow nodes from Redis Streams.

The same process as `oneiric run` (the plan verified and attested the same
way, new plans swapped live, status.json, controls), with one more service:
the node consumer of `oneiric._flows.workers`, which takes the nodes of the
running plan's digest only.  Its broker connection and counters are written
every second to STATE/workers/NAME.json.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import click

from oneiric._cli.runtime import _fail, run
from oneiric._lifecycle import snapshots


def _worker(tasks: str, consumer: str | None, prefetch: int, **options: Any) -> None:
    """Run a verified plan like `run`, and execute its workflow nodes dispatched on Redis.

    Runs of `oneiric workflow run|serve --tasks URL` send their ready nodes to
    the workers of the same plan digest; the checkpoint is written by the run
    once the outcome is back.
    """
    from oneiric._flows import streams

    try:
        settings = streams.StreamSettings.parse(tasks)
        streams.check(settings)
    except streams.BrokerUnavailable as exc:
        _fail("text", str(exc))
    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    status_path = snapshots.state_dir(options.get("state")) / "workers" / f"{name}.json"

    async def service(supervisor: Any) -> None:
        import anyio

        from oneiric._cli.fleet import heartbeat
        from oneiric._flows.link import Link
        from oneiric._flows.workers import serve_worker

        client = await streams.connect(settings)
        link = Link("broker", settings.url)
        supervisor.connections[link.role] = link  # status.json, /status: the runtime's own
        counters: dict[str, Any] = {}

        def document() -> dict[str, Any]:
            return {"kind": "worker", "consumer": name, "broker": link.as_json()} | counters

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(heartbeat, status_path, document)
                await serve_worker(
                    client,
                    settings,
                    supervisor.runtime,
                    consumer=name,
                    prefetch=prefetch,
                    status=counters,
                    link=link,
                )
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    click.get_current_context().invoke(run, **options, extra_services=[service])


worker = click.Command(
    "worker",
    callback=_worker,
    help=_worker.__doc__,
    params=[
        click.Option(
            ["--tasks"],
            envvar="ONEIRIC_TASKS",
            required=True,
            metavar="URL",
            help="Redis URL the nodes come from (redis://HOST:PORT/DB[?visibility=S]); "
            "env ONEIRIC_TASKS.",
        ),
        click.Option(["--consumer"], metavar="NAME", help="Consumer name (default HOST-PID)."),
        click.Option(
            ["--prefetch"], default=16, show_default=True, help="Nodes in flight at once."
        ),
        *run.params,
    ],
)
