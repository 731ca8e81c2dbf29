"""`oneiric worker`: a runtime that takes workflow nodes from Redis Streams.

The same process as `oneiric run` (the plan verified and attested the same
way, new plans swapped live, status.json, controls, the flow engine of each
plan: `oneiric._cli.flowhost`), with one more service: the node consumer of
`oneiric._flows.workers`, which takes the nodes of the running plan's digest
only.  Its broker connection and counters are written every second to
STATE/workers/NAME.json.  The nodes run in their plan's flow context: the
workflows they start are recorded in the flow store (--store /
ONEIRIC_FLOWS, else STATE/flows.db) and dispatched to the workers (--tasks);
the events they emit go to the --events / ONEIRIC_EVENTS streams when given.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import click

from oneiric._cli.flowhost import FlowHost
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
    ctx = click.get_current_context()
    ctx.meta["oneiric.tasks"] = tasks  # the runs the nodes start are dispatched here too

    def services(flows: FlowHost) -> list[Any]:
        async def service(supervisor: Any) -> None:
            import anyio

            from oneiric._cli.fleet import heartbeat, links
            from oneiric._flows.link import Link
            from oneiric._flows.workers import serve_worker

            client = await streams.connect(settings)
            link = Link("broker", settings.url)
            supervisor.connections[link.role] = link  # status.json, /status: the runtime's own
            counters: dict[str, Any] = {}

            def document() -> dict[str, Any]:
                found = {"kind": "worker", "consumer": name, "broker": link.as_json()}
                return found | links(flows.store, None) | counters

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
                        engines=flows.following,
                    )
            finally:
                with anyio.CancelScope(shield=True):
                    await client.aclose()

        return [service]

    ctx.invoke(run, **options, extra_services=services)


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
            help="Redis URL the nodes come from and the nodes' runs are dispatched to "
            "(redis://HOST:PORT/DB[?visibility=S]); env ONEIRIC_TASKS.",
        ),
        click.Option(["--consumer"], metavar="NAME", help="Consumer name (default HOST-PID)."),
        click.Option(
            ["--prefetch"], default=16, show_default=True, help="Nodes in flight at once."
        ),
        *(p for p in run.params if p.name != "tasks"),  # run's --tasks: this one
    ],
)
