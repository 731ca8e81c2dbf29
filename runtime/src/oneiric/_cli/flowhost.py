"""The flow engine's options (--store, --events, --tasks) and its host in `oneiric run`.

`oneiric workflow|event|action|task` take the options too (`oneiric._cli.flows`).
Under `oneiric run` (and so `oneiric worker`) the engine of each plan with
routes, workflows or flow actions is opened by a supervisor service
(`FlowHost.serve`) and bound, following live swaps, around everything the
runtime runs (`oneiric._flows.context.Following`): the app's and the
components' calls emit, start and schedule like a workflow node.  Only click
is imported here; the drivers (redis, psycopg) when an option names them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from oneiric._cli.exits import _fail

FC = TypeVar("FC", bound=Callable[..., Any])

if TYPE_CHECKING:
    from oneiric._flows.context import FlowContext, Following
    from oneiric._flows.store import FlowStore
    from oneiric._lifecycle.supervisor import Supervisor


def _remembered(name: str, envvar: str, help: str) -> Callable[[FC], FC]:
    """An option --NAME URL kept in the context's meta ("oneiric.NAME"), shared by
    the commands a command invokes (`worker` -> `run`)."""

    def remember(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        ctx.meta[f"oneiric.{name}"] = value

    return click.option(
        f"--{name}", envvar=envvar, metavar="URL", expose_value=False, callback=remember, help=help
    )


STORE = _remembered(
    "store",
    "ONEIRIC_FLOWS",
    "Flow store: postgresql://USER@HOST:PORT/DB[?lease=S] shares runs between runtimes "
    "(env ONEIRIC_FLOWS); STATE/flows.db when unset.",
)
TASKS = _remembered(
    "tasks",
    "ONEIRIC_TASKS",
    "Dispatch the nodes to `oneiric worker`s on Redis Streams "
    "(redis://HOST:PORT/DB; env ONEIRIC_TASKS); run here when unset.",
)
EVENTS = click.option(
    "--events",
    "events_url",
    envvar="ONEIRIC_EVENTS",
    metavar="URL",
    help="Event transport: redis://HOST:PORT/DB[?maxlen=N&visibility=S] for Redis Streams "
    "(env ONEIRIC_EVENTS), also where event.dispatch emits; in process when unset.",
)


def _store(fmt: str, state: Path) -> FlowStore:
    """The store named by --store / ONEIRIC_FLOWS (PostgreSQL), else STATE/flows.db."""
    from oneiric._flows.store import FlowStore

    url = click.get_current_context().meta.get("oneiric.store")
    if url:
        from oneiric._flows.postgres import DatabaseUnavailable, PostgresFlowStore, is_url

        if not is_url(url):
            _fail(fmt, f"--store {url!r} is not a postgresql:// URL")
        try:
            return PostgresFlowStore(url)
        except DatabaseUnavailable as exc:
            _fail(fmt, str(exc))
    try:
        return FlowStore(state)
    except Exception as exc:  # sqlite3.Error or OSError
        _fail(fmt, f"{state}: cannot open the flows database: {exc}")


class FlowHost:
    """The engines `oneiric run` hosts: checked at start, opened per plan by `serve`.

    A broker (--events, --tasks) or a database (--store) that is named but
    unreachable exits 2 here, before the runtime starts; without them
    nothing is opened until a plan needs an engine (then STATE/flows.db).
    """

    def __init__(self, state: Path, events_url: str | None) -> None:
        from oneiric._flows.context import Following

        ctx = click.get_current_context()
        self.state = state
        self.events_url = events_url or None
        self.tasks_url: str | None = ctx.meta.get("oneiric.tasks") or None
        for url in (self.events_url, self.tasks_url):
            if url:
                from oneiric._flows import streams

                try:
                    streams.check(streams.StreamSettings.parse(url))
                except streams.BrokerUnavailable as exc:
                    _fail("text", str(exc))
        # A named database is opened (and checked) now; the default file at first need.
        named = ctx.meta.get("oneiric.store")
        self.store: FlowStore | None = _store("text", state) if named else None
        self.runtime: Any = None
        self.following: Following = Following(lambda: self.runtime.plan if self.runtime else None)

    def _open_store(self) -> FlowStore:
        from oneiric._flows.store import FlowStore

        if self.store is None:
            self.store = FlowStore(self.state)
        return self.store

    async def serve(self, supervisor: Supervisor) -> None:
        """Open the engine of every plan the runtime runs that needs one, until stopped."""
        import anyio

        from oneiric._flows.engine import follow
        from oneiric._flows.link import Link
        from oneiric._flows.workers import RedisTasks
        from oneiric._lifecycle.supervisor import Observer

        swapped = anyio.Event()

        class Swaps(Observer):
            def applied(self, *_: Any) -> None:
                swapped.set()

        async def next_swap() -> None:
            nonlocal swapped
            await swapped.wait()
            swapped = anyio.Event()

        # The broker as seen while a swap's engine cannot open yet (then its own Link).
        opening = Link("broker", self.events_url) if self.events_url else None

        def opened(context: FlowContext) -> None:  # status.json "connections"
            status = getattr(context.emitter, "status", None)  # RedisEvents: its Link
            if status is not None:
                supervisor.connections["events"] = status
                if opening is not None:
                    opening.restored()
            link = getattr(context.store, "link", None)  # PostgreSQL
            if link is not None:
                supervisor.connections[link.role] = link

        def failed(error: BaseException, wait_s: float) -> None:
            if opening is not None:
                opening.failed(error, wait_s)
                supervisor.connections["events"] = opening

        self.runtime = supervisor.runtime
        supervisor.observers.append(Swaps())
        dispatcher = await RedisTasks.open(self.tasks_url) if self.tasks_url else None
        if dispatcher is not None:
            supervisor.connections[dispatcher.link.role] = dispatcher.link
        try:
            async with anyio.create_task_group() as group:
                if dispatcher is not None:
                    group.start_soon(dispatcher.serve)
                await follow(
                    supervisor.runtime,
                    self.following,
                    self._open_store,
                    next_swap,
                    tasks=dispatcher,
                    events_url=self.events_url,
                    opened=opened,
                    failed=failed,
                )
        finally:
            with anyio.CancelScope(shield=True):
                if dispatcher is not None:
                    await dispatcher.close()
            if self.store is not None:
                self.store.close()
