"""`oneiric worker`: a runtime that takes workflow nodes from Redis Streams.

The same process as `oneiric run` (the plan verified and attested the same
way, new plans swapped live, status.json, controls), with one more service:
the node consumer of `oneiric._flows.workers`, which takes the nodes of the
running plan's digest only.  Its broker connection and counters are written
every second to STATE/workers/NAME.json.  The nodes run in a flow context
over the flow store (--store / ONEIRIC_FLOWS, else STATE/flows.db): the
workflows they start are recorded there and dispatched to the workers; the
events they emit go to the --events / ONEIRIC_EVENTS streams when given.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import click

from oneiric._cli.flows import EVENTS, STORE, _store
from oneiric._cli.runtime import _fail, run
from oneiric._lifecycle import snapshots


def _worker(
    tasks: str, consumer: str | None, prefetch: int, events_url: str | None, **options: Any
) -> None:
    """Run a verified plan like `run`, and execute its workflow nodes dispatched on Redis.

    Runs of `oneiric workflow run|serve --tasks URL` send their ready nodes to
    the workers of the same plan digest; the checkpoint is written by the run
    once the outcome is back.
    """
    from oneiric._flows import streams

    try:
        settings = streams.StreamSettings.parse(tasks)
        streams.check(settings)
        if events_url:
            streams.check(streams.StreamSettings.parse(events_url))
    except streams.BrokerUnavailable as exc:
        _fail("text", str(exc))
    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    state = snapshots.state_dir(options.get("state"))
    status_path = state / "workers" / f"{name}.json"
    store = _store("text", state)  # an unreachable database exits 2 here

    async def service(supervisor: Any) -> None:
        import anyio

        from oneiric._cli.fleet import heartbeat, links
        from oneiric._flows.link import Link
        from oneiric._flows.postgres import PostgresFlowStore
        from oneiric._flows.workers import RedisTasks, serve_worker

        client = await streams.connect(settings)
        link = Link("broker", settings.url)
        supervisor.connections[link.role] = link  # status.json, /status: the runtime's own
        if isinstance(store, PostgresFlowStore):  # the nodes' flow context's, shared
            supervisor.connections[store.link.role] = store.link
        dispatcher = RedisTasks(client, settings)  # the nodes of runs started here
        counters: dict[str, Any] = {}

        def document() -> dict[str, Any]:
            found = {"kind": "worker", "consumer": name, "broker": link.as_json()}
            return found | links(store, None) | counters

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(heartbeat, status_path, document)
                group.start_soon(dispatcher.serve)
                await serve_worker(
                    client,
                    settings,
                    supervisor.runtime,
                    consumer=name,
                    prefetch=prefetch,
                    status=counters,
                    link=link,
                    store=store,
                    dispatcher=dispatcher,
                    events_url=events_url or None,
                )
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            store.close()

    click.get_current_context().invoke(run, **options, extra_services=[service])


worker = EVENTS(  # the nodes' context's flow store and event transport (appended options)
    STORE(
        click.Command(
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
                click.Option(
                    ["--consumer"], metavar="NAME", help="Consumer name (default HOST-PID)."
                ),
                click.Option(
                    ["--prefetch"], default=16, show_default=True, help="Nodes in flight at once."
                ),
                *run.params,
            ],
        )
    )
)
