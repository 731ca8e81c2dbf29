"""`oneiric workflow|event|action`: run workflows, deliver events, invoke actions.

These commands run the work in their own process, on the running runtime's
plan (STATE/last-good.json, verified when `oneiric run` accepted it) or an
`--unsigned-plan` file, activating only the components they need through
the same `Runtime` (pins, config, lifecycle).  Records are shared through the
state dir's flows.db: a run started here can be resumed, inspected or
cancelled from any other process.

Exit codes: 0 success; 1 bad input (unknown workflow, topic, action, run or
dead letter; malformed JSON; a run that cannot be resumed), a refused plan
(pins, config or activation: the same rule as `oneiric run`) or the work
failed (failed run, a dead-lettered delivery, a failed action); 2 no plan or
an I/O or configuration error.  Heavy modules (anyio, pydantic, httpx) load only
inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oneiric._cli import fleet
from oneiric._cli.flowhost import EVENTS, STORE, TASKS, _store
from oneiric._cli.runtime import (
    FORMAT,
    MODULE_PATH,
    STATE,
    VERBOSE,
    _duration_s,
    _emit,
    _fail,
)
from oneiric._lifecycle import snapshots
from oneiric._text import plural

if TYPE_CHECKING:
    from oneiric._flows.store import FlowStore, RunRecord
    from oneiric._flows.workflows import Workflows
    from oneiric._lifecycle.modulepath import Imports
    from oneiric._plan.model import Plan

UNSIGNED = click.option(
    "--unsigned-plan",
    "unsigned",
    metavar="PATH",
    help="Use this UNSIGNED plan file instead of the running plan (development only).",
)


def _json_arg(fmt: str, text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        _fail(fmt, f"{what} is not valid JSON: {exc}", 1)


def _plan(fmt: str, unsigned: str | None, state: Path, required: bool = True) -> Plan | None:
    from oneiric._flows.host import PlanUnavailable, read_plan

    if unsigned is not None:
        click.echo(
            f"warning: using the UNSIGNED plan {unsigned}; its origin is not verified", err=True
        )
        path = Path(unsigned)
    else:
        path = state / snapshots.LAST_GOOD
        if not path.exists():
            if not required:
                return None
            _fail(
                fmt,
                f"no running plan in {state} (start `oneiric run --state {state}` "
                "or pass --unsigned-plan PATH)",
            )
    try:
        return read_plan(path)
    except PlanUnavailable as exc:
        _fail(fmt, str(exc))


def _imports() -> Imports:
    """Where the plan's module path is: found from the plan file the command uses."""
    from oneiric._lifecycle.modulepath import Imports

    params = click.get_current_context().params
    near = params.get("unsigned") or str(snapshots.state_dir(params.get("state")))
    return Imports.find(near, params.get("module_path", ()))


def _setup(
    fmt: str, unsigned: str | None, state: str | None, check: Callable[[Plan], object]
) -> tuple[Plan, FlowStore]:
    """The plan (checked by `check`: an unknown name exits 1), logging, and the store."""
    from oneiric._flows.host import Unknown

    directory = snapshots.state_dir(state)
    plan = _plan(fmt, unsigned, directory)
    assert plan is not None
    try:
        check(plan)
    except Unknown as exc:
        _fail(fmt, str(exc), 1)
    _configure_logs(fmt)
    return plan, _store(fmt, directory)


def _configure_logs(fmt: str) -> None:
    from oneiric._cli import logs

    verbose = click.get_current_context().params.get("verbose", False)
    try:
        logs.configure("info" if verbose else "warning")
    except ValueError as exc:
        _fail(fmt, str(exc))


def _run_async(fmt: str, main: Any) -> Any:
    """anyio.run(main); a refused plan exits 1, as from `oneiric run` (see the docstring)."""
    import anyio

    from oneiric._flows.store import StoreUnavailable
    from oneiric._flows.streams import BrokerUnavailable
    from oneiric._lifecycle.runtime import PlanRejected, SwapAborted

    try:
        try:
            return anyio.run(main)
        except BaseExceptionGroup as group:
            raise _sole(group) from None
    except (PlanRejected, SwapAborted) as exc:
        _fail(fmt, f"cannot activate the plan's components: {exc}", 1)
    except (StoreUnavailable, BrokerUnavailable) as exc:
        _fail(fmt, str(exc))


def _sole(error: BaseException) -> BaseException:
    """The one exception inside nested single-member task-group exception groups."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


# -- workflow ------------------------------------------------------------------------------
@click.group()
def workflow() -> None:
    """Run workflows and inspect, resume or cancel their runs."""


def _run_text(record: RunRecord) -> str:
    lines = [
        f"run {record.id}  workflow {record.workflow}  {record.status.upper()}"
        + (f"  ({record.error})" if record.error else "")
    ]
    for node in record.nodes.values():
        duration = "" if node.duration_ms is None else f"{node.duration_ms:9.1f} ms"
        attempts = f"{node.attempts} attempt{'s' if node.attempts != 1 else ''}"
        lines.append(f"  {node.name:<20} {node.status:<10} {attempts:<11} {duration}")
        if node.error:
            lines.append(f"      {node.error}")
    return "\n".join(lines)


async def _drive(workflows: Any, work: Any) -> Any:
    """Run `work()`; SIGINT/SIGTERM cancel this process's runs (recorded, resumable)."""
    import signal

    import anyio

    result: Any = None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    workflows.cancel_all()

        async def body() -> None:
            nonlocal result
            result = await work()
            group.cancel_scope.cancel()

        group.start_soon(watch)
        group.start_soon(body)
    return result


@asynccontextmanager
async def _workflows(
    plan: Plan,
    tasks: list[str],
    imports: Any,
    store: FlowStore,
    also: Sequence[str] = (),
    handler_timeout_s: float = 30.0,
) -> AsyncIterator[Workflows]:
    """`Workflows` running `tasks` here, or, with --tasks URL, dispatching them to workers.

    `also`: more components to activate here (event handlers).  An `EventBus`
    and the workflows are bound as the flow context (`current().bus`) for the
    flow actions (`oneiric.actions.flow`) and `event` commands; with --events URL
    the flow actions emit to its streams (`current().emitter`).
    """
    import anyio

    from oneiric._flows.context import bound, needs_engine
    from oneiric._flows.engine import engine
    from oneiric._flows.events import EventBus
    from oneiric._flows.host import activated
    from oneiric._flows.workers import RedisTasks
    from oneiric._flows.workflows import Workflows

    if needs_engine(plan):  # a flow action may emit to any handler, start any workflow
        tasks, also = Workflows.task_ids(plan), sorted({*also, *EventBus.handler_ids(plan)})
    ctx = click.get_current_context()
    url = ctx.meta.get("oneiric.tasks")
    events_url = ctx.params.get("events_url") or None
    dispatcher = await RedisTasks.open(url) if url else None
    try:
        async with (
            activated(plan, [*also, *([] if dispatcher else tasks)], imports) as runtime,
            anyio.create_task_group() as group,
        ):
            if dispatcher is not None:
                group.start_soon(dispatcher.serve)
            async with engine(
                plan,
                runtime,
                store,
                tasks=dispatcher,
                handler_timeout_s=handler_timeout_s,
                events_url=events_url,
            ) as context:
                with bound(context):
                    yield context.workflows
            group.cancel_scope.cancel()
    finally:
        if dispatcher is not None:
            await dispatcher.close()


def _execute(
    fmt: str,
    plan: Plan,
    store: FlowStore,
    tasks: list[str],
    start: Callable[[Workflows], Awaitable[RunRecord]],
) -> None:
    """Activate `tasks`, drive the run `start` begins, report it and exit with its outcome."""
    from oneiric._flows.workflows import WorkflowError

    imports = _imports()

    async def main() -> RunRecord:
        async with _workflows(plan, tasks, imports, store) as flows:
            record: RunRecord = await _drive(flows, lambda: start(flows))
            return record

    try:
        record = _run_async(fmt, main)
    except WorkflowError as exc:
        _fail(fmt, str(exc), 1)
    _finish_run(fmt, record)


def _finish_run(fmt: str, record: RunRecord) -> None:
    _emit(fmt, record.as_json(), _run_text(record))
    if record.status == "cancelled":
        click.echo(f"resume with: oneiric workflow resume {record.id}", err=True)
    sys.exit(0 if record.status == "succeeded" else 1)


@workflow.command("run")
@click.argument("name")
@click.option("--input", "input_text", metavar="JSON", help="The run's input (JSON).")
@UNSIGNED
@STATE
@MODULE_PATH
@STORE
@TASKS
@EVENTS
@VERBOSE
@FORMAT
def workflow_run(
    name: str,
    input_text: str | None,
    events_url: str | None,
    unsigned: str | None,
    state: str | None,
    fmt: str,
    verbose: bool,
    module_path: tuple[str, ...],
) -> None:
    """Run workflow NAME to its end, checkpointing every node (exit 1 if it fails)."""
    data = _json_arg(fmt, input_text, "--input")
    from oneiric._flows.workflows import Workflows, find

    plan, store = _setup(fmt, unsigned, state, lambda plan: find(plan, name))
    tasks = Workflows.task_ids(plan, [name])
    _execute(fmt, plan, store, tasks, lambda flows: flows.run(name, data, trigger="cli"))


@workflow.command("resume")
@click.argument("run_id")
@UNSIGNED
@STATE
@MODULE_PATH
@STORE
@TASKS
@EVENTS
@VERBOSE
@FORMAT
def workflow_resume(
    run_id: str,
    events_url: str | None,
    unsigned: str | None,
    state: str | None,
    fmt: str,
    verbose: bool,
    module_path: tuple[str, ...],
) -> None:
    """Resume RUN_ID: run only the nodes that have not succeeded."""
    directory = snapshots.state_dir(state)
    store = _store(fmt, directory)
    found = store.run(run_id)
    if found is None:
        _fail(fmt, f'no workflow run "{run_id}" in {store.location}', 1)
    if found.status == "succeeded":
        _fail(fmt, f"run {run_id} already finished (succeeded); nothing to resume", 1)
    plan = _plan(fmt, unsigned, directory)
    assert plan is not None
    _configure_logs(fmt)
    tasks = sorted({f"task:{node['task']}" for node in found.definition})
    _execute(fmt, plan, store, tasks, lambda flows: flows.resume(run_id))


@workflow.command("status")
@click.argument("run_id")
@STATE
@STORE
@FORMAT
def workflow_status(run_id: str, state: str | None, fmt: str) -> None:
    """A run's state and each node's state, attempts and duration."""
    store = _store(fmt, snapshots.state_dir(state))
    record = store.run(run_id)
    if record is None:
        _fail(fmt, f'no workflow run "{run_id}" in {store.location}', 1)
    _emit(fmt, record.as_json(), _run_text(record))


@workflow.command("list")
@click.option("--workflow", "name", metavar="NAME", help="Only runs of this workflow.")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@STATE
@STORE
@FORMAT
def workflow_list(name: str | None, limit: int, state: str | None, fmt: str) -> None:
    """Recent runs, newest first."""
    import time

    store = _store(fmt, snapshots.state_dir(state))
    runs = store.runs(limit, name)
    lines = [
        f"{r.id}  {r.workflow:<16} {r.status:<10} "
        f"{sum(n.status == 'succeeded' for n in r.nodes.values())}/{len(r.nodes)} nodes  "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.created_at))}  {r.trigger}"
        for r in runs
    ]
    _emit(
        fmt,
        {"runs": [{k: v for k, v in r.as_json().items() if k != "nodes"} for r in runs]},
        "\n".join(lines) or "no runs",
    )


@workflow.command("cancel")
@click.argument("run_id")
@STATE
@STORE
@FORMAT
def workflow_cancel(run_id: str, state: str | None, fmt: str) -> None:
    """Ask the process running RUN_ID to cancel it (it stays resumable)."""
    from oneiric._flows.store import StoreError

    store = _store(fmt, snapshots.state_dir(state))
    try:
        record = store.request_cancel(run_id)
    except StoreError as exc:
        _fail(fmt, str(exc), 1)
    _emit(
        fmt,
        {"run": run_id, "cancel_requested": True, "owner_pid": record.owner_pid},
        f"cancel requested for run {run_id} (process {record.owner_pid})",
    )


@workflow.command("serve")
@click.option(
    "--interval",
    metavar="DURATION",
    help="How often to look for runs to take over (default: a third of the lease).",
)
@UNSIGNED
@STATE
@MODULE_PATH
@STORE
@TASKS
@EVENTS
@VERBOSE
@FORMAT
def workflow_serve(
    interval: str | None,
    events_url: str | None,
    unsigned: str | None,
    state: str | None,
    fmt: str,
    verbose: bool,
    module_path: tuple[str, ...],
) -> None:
    """Take over and run, until SIGTERM, the runs whose owner stopped (shared PostgreSQL store).

    A run whose owner stopped renewing its lease (killed, machine lost) is
    taken over within the lease time and resumed from its checkpoints.  At
    SIGTERM/SIGINT this runtime lets go of its runs (their leases end now), so
    another one takes them over at once.  The store's connection state is
    written every second to STATE/runtimes/OWNER.json.
    """
    import os

    directory = snapshots.state_dir(state)
    plan, store = _setup(fmt, unsigned, state, lambda plan: None)
    if store.lease_s is None:
        _fail(fmt, "workflow serve needs a shared store: --store postgresql://... (ONEIRIC_FLOWS)")
    every = None if interval is None else _duration_s(interval)
    owner = str(getattr(store, "owner", os.getpid()))
    status_path = directory / "runtimes" / f"{owner}.json"
    tasks = sorted({f"task:{n.task}" for w in plan.workflows for n in w.nodes})
    imports = _imports()

    async def main() -> list[str]:
        import signal

        import anyio

        async with _workflows(plan, tasks, imports, store) as flows:
            released: list[str] = []
            async with anyio.create_task_group() as group:

                def document() -> dict[str, Any]:
                    return {
                        "kind": "runtime",
                        "owner": owner,
                        "plan": plan.digest,
                        "runs": sorted(flows.active()),
                    } | fleet.links(store, flows)

                group.start_soon(flows.adopt, every)
                group.start_soon(fleet.heartbeat, status_path, document)
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                released = await flows.release_all()
                group.cancel_scope.cancel()
            return released

    released = _run_async(fmt, main)
    _emit(fmt, {"released": released}, f"stopped; released {len(released)} run(s)")


# -- event ---------------------------------------------------------------------------------
@click.group()
def event() -> None:
    """Emit events to the plan's handlers; list and replay dead letters."""


def _headers(fmt: str, pairs: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(fmt, f"--header {pair!r} is not KEY=VALUE", 1)
        headers[key.strip().lower()] = value
    return headers


def _delivery_text(data: dict[str, Any]) -> str:
    lines = [
        f"event {data['event_id']} on {data['topic']} ({data['fanout']}): "
        f"{plural(len(data['matched']), 'handler')}"
        + (f", filtered out: {', '.join(data['skipped'])}" if data["skipped"] else "")
    ]
    for o in data["outcomes"]:
        tail = f"  → {json.dumps(o['result'])}" if o["result"] is not None else ""
        if o["dead_letter"] is not None:
            tail = f"  {o['error']}  (dead letter {o['dead_letter']})"
        lines.append(
            f"  {o['handler']:<16} {o['status']:<14} {plural(o['attempts'], 'attempt'):<10} "
            f"{o['ms']:8.1f} ms{tail}"
        )
    return "\n".join(lines)


async def _event_host(
    plan: Plan, store: FlowStore, timeout_s: float, work: Any, imports: Imports
) -> Any:
    """Activate handlers and workflow tasks; run `work(bus)`; wait for started workflows.

    With --tasks the workflows' nodes go to workers instead of running here.
    """
    from oneiric._flows.context import current
    from oneiric._flows.events import EventBus
    from oneiric._flows.workflows import Workflows

    handlers, tasks = EventBus.handler_ids(plan), Workflows.task_ids(plan)
    async with _workflows(plan, tasks, imports, store, handlers, timeout_s):
        context = current()
        assert context is not None
        return await work(context.bus)


TIMEOUT = click.option(
    "--handler-timeout", default="30s", show_default=True, help="Bound on each handler attempt."
)


def _broker(fmt: str, url: str, plan: Plan | None, work: Any) -> Any:
    """Run `work(events)` on a connected `RedisEvents`; an unreachable broker exits 2."""
    from oneiric._flows.redis_events import RedisEvents
    from oneiric._flows.streams import BrokerUnavailable

    async def main() -> Any:
        events = await RedisEvents.open(url, plan)
        try:
            return await work(events)
        finally:
            await events.close()

    try:
        return _run_async(fmt, main)
    except BrokerUnavailable as exc:
        _fail(fmt, str(exc))


@event.command("emit")
@click.argument("topic")
@click.option("--payload", "payload_text", metavar="JSON", help="The event payload (JSON).")
@click.option("--header", "header_pairs", multiple=True, metavar="K=V", help="A header (repeat).")
@TIMEOUT
@EVENTS
@UNSIGNED
@STATE
@MODULE_PATH
@STORE
@TASKS
@VERBOSE
@FORMAT
def event_emit(
    topic: str,
    payload_text: str | None,
    header_pairs: tuple[str, ...],
    handler_timeout: str,
    events_url: str | None,
    unsigned: str | None,
    state: str | None,
    fmt: str,
    verbose: bool,
    module_path: tuple[str, ...],
) -> None:
    """Deliver one event on TOPIC; exit 1 if a handler exhausted its retries.

    With --events (Redis Streams) the event is appended to the topic's stream
    for the consumers (`oneiric event consume`) and the command exits 0.
    """
    payload = _json_arg(fmt, payload_text, "--payload")
    headers = _headers(fmt, header_pairs)
    from oneiric._flows.events import find_route

    plan, store = _setup(fmt, unsigned, state, lambda plan: find_route(plan, topic))
    timeout_s = _duration_s(handler_timeout)
    if events_url:
        published = _broker(fmt, events_url, plan, lambda ev: ev.emit(topic, payload, headers))
        _emit(
            fmt,
            published.as_json(),
            f"event {published.event_id} appended to {published.stream} ({published.entry})",
        )
        return
    imports = _imports()

    async def work(bus: Any) -> dict[str, Any]:
        delivery = await bus.emit(topic, payload, headers)
        data: dict[str, Any] = delivery.as_json()
        return data

    data = _run_async(fmt, lambda: _event_host(plan, store, timeout_s, work, imports))
    runs = [
        o["result"]["run"]
        for o in data["outcomes"]
        if isinstance(o["result"], dict) and isinstance(o["result"].get("run"), str)
    ]
    data["workflow_runs"] = [r.as_json() for rid in runs if (r := store.run(rid)) is not None]
    text = _delivery_text(data)
    for run in data["workflow_runs"]:
        text += f"\n  workflow run {run['id']} ({run['workflow']}): {run['status']}"
    _emit(fmt, data, text)
    sys.exit(0 if data["ok"] else 1)


@event.command("dead-letters")
@click.option("--all", "show_all", is_flag=True, help="Include dead letters already replayed.")
@click.option("--limit", default=100, show_default=True)
@EVENTS
@STATE
@STORE
@FORMAT
def event_dead_letters(
    show_all: bool, limit: int, events_url: str | None, state: str | None, fmt: str
) -> None:
    """Deliveries that exhausted their retries (oldest first)."""
    if events_url:
        letters = _broker(fmt, events_url, None, lambda ev: ev.dead_letters(show_all, limit))
    else:
        letters = _store(fmt, snapshots.state_dir(state)).dead_letters(show_all, limit)
    lines = [
        f"{d.id!s:>5}  {d.topic:<20} {d.handler:<16} {plural(d.attempts, 'attempt'):<10}  "
        f"{'resolved' if d.resolved_at else 'open':<8}  {d.error}"
        for d in letters
    ]
    _emit(fmt, {"dead_letters": [d.as_json() for d in letters]}, "\n".join(lines) or "none")


@event.command("replay")
@click.argument("letter_id")
@TIMEOUT
@EVENTS
@UNSIGNED
@STATE
@MODULE_PATH
@STORE
@TASKS
@VERBOSE
@FORMAT
def event_replay(
    letter_id: str,
    handler_timeout: str,
    events_url: str | None,
    unsigned: str | None,
    state: str | None,
    fmt: str,
    verbose: bool,
    module_path: tuple[str, ...],
) -> None:
    """Deliver dead letter LETTER_ID again to its handler (resolved on success)."""
    from oneiric._flows.events import EventError

    directory = snapshots.state_dir(state)
    store = _store(fmt, directory)
    if events_url:
        _replay_redis(fmt, events_url, letter_id, handler_timeout, unsigned, directory, store)
        return
    if not letter_id.isdigit():
        _fail(fmt, f"dead letter id {letter_id!r} is not a number", 1)
    number = int(letter_id)
    letter = store.dead_letter(number)
    if letter is None:
        _fail(fmt, f"no dead letter {letter_id} in {store.location}", 1)
    if letter.resolved_at is not None:
        _fail(fmt, f"dead letter {letter_id} was already replayed successfully", 1)
    plan = _plan(fmt, unsigned, directory)
    assert plan is not None
    _configure_logs(fmt)
    imports = _imports()

    async def work(bus: Any) -> Any:
        return await bus.replay(number)

    try:
        _, outcome = _run_async(
            fmt, lambda: _event_host(plan, store, _duration_s(handler_timeout), work, imports)
        )
    except EventError as exc:
        _fail(fmt, str(exc), 1)
    _replayed(fmt, letter, outcome)


def _replay_redis(
    fmt: str,
    url: str,
    letter_id: str,
    handler_timeout: str,
    unsigned: str | None,
    directory: Path,
    store: FlowStore,
) -> None:
    from oneiric._flows.events import EventError

    plan = _plan(fmt, unsigned, directory)
    assert plan is not None
    _configure_logs(fmt)
    timeout_s = _duration_s(handler_timeout)
    imports = _imports()

    async def work(events: Any) -> Any:
        letter = await events.dead_letter(letter_id)
        if letter is None:
            raise EventError(f"no dead letter {letter_id} in {events.settings.safe_url}")

        async def replay(bus: Any) -> Any:
            return await events.replay(bus, letter_id)

        return await _event_host(plan, store, timeout_s, replay, imports)

    try:
        letter, outcome = _broker(fmt, url, plan, work)
    except EventError as exc:
        _fail(fmt, str(exc), 1)
    _replayed(fmt, letter, outcome)


def _replayed(fmt: str, letter: Any, outcome: Any) -> None:
    data = {"dead_letter": letter.id, **outcome.as_json()}
    ok = outcome.status == "delivered"
    _emit(
        fmt,
        data,
        f"dead letter {letter.id} → {letter.handler}: "
        + ("delivered, resolved" if ok else f"failed again: {outcome.error}"),
    )
    sys.exit(0 if ok else 1)


@event.command("consume")
@click.option("--consumer", metavar="NAME", help="Consumer name (default HOST-PID).")
@click.option("--prefetch", default=32, show_default=True, help="Entries in flight per group.")
@TIMEOUT
@EVENTS
@UNSIGNED
@STATE
@MODULE_PATH
@STORE
@TASKS
@VERBOSE
@FORMAT
def event_consume(
    consumer: str | None,
    prefetch: int,
    handler_timeout: str,
    events_url: str | None,
    unsigned: str | None,
    state: str | None,
    fmt: str,
    verbose: bool,
    module_path: tuple[str, ...],
) -> None:
    """Deliver events from Redis Streams to the plan's handlers until SIGTERM/SIGINT.

    Each subscription is a consumer group; this process is one consumer of
    each.  Its broker connection and counters are written every second to
    STATE/consumers/NAME.json.
    """
    import os
    import socket

    if not events_url:
        _fail(fmt, "event consume needs --events URL (or ONEIRIC_EVENTS): a Redis URL")
    directory = snapshots.state_dir(state)
    plan, store = _setup(fmt, unsigned, state, lambda plan: None)
    timeout_s = _duration_s(handler_timeout)
    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    status_path = directory / "consumers" / f"{name}.json"
    imports = _imports()

    async def work(events: Any) -> None:
        import signal

        import anyio

        stop = anyio.Event()

        async def serve(bus: Any) -> None:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            stop.set()
                            return

                def document() -> dict[str, Any]:
                    found = {
                        "kind": "consumer",
                        "consumer": name,
                        "plan": plan.digest,
                        "groups": events.groups,
                        "backlog": list(events.backlog.values()),
                        "broker": events.status.as_json(),
                    }
                    if stop.is_set():
                        found["state"] = "stopping"
                    return found | fleet.links(store, bus.workflows)

                group.start_soon(watch)
                group.start_soon(fleet.heartbeat, status_path, document)
                if store.lease_s is not None:  # a shared store: take over abandoned runs too
                    group.start_soon(bus.workflows.adopt)
                await events.consume(bus, consumer=name, prefetch=prefetch, stop=stop)
                group.cancel_scope.cancel()

        await _event_host(plan, store, timeout_s, serve, imports)

    _broker(fmt, events_url, plan, work)


# -- action --------------------------------------------------------------------------------
@click.group()
def action() -> None:
    """Invoke actions: the plan's action components, or a built-in by name."""


@action.command("invoke")
@click.argument("key")
@click.option("--payload", "payload_text", metavar="JSON", help="The action's payload (JSON).")
@click.option("--timeout", default="60s", show_default=True, help="Bound on the action.")
@UNSIGNED
@STATE
@MODULE_PATH
@STORE
@EVENTS
@VERBOSE
@FORMAT
def action_invoke(
    key: str,
    payload_text: str | None,
    timeout: str,
    events_url: str | None,
    unsigned: str | None,
    state: str | None,
    fmt: str,
    verbose: bool,
    module_path: tuple[str, ...],
) -> None:
    """Invoke action KEY (the plan's action:KEY, else a built-in) with a JSON payload.

    The flow actions (event.dispatch, workflow.start, task.schedule) run with
    the plan's handlers and tasks activated here; a run started by
    workflow.start finishes before the command exits.
    """
    from oneiric._flows.context import ACTIONS_MODULE
    from oneiric.actions import BUILTINS, ActionError, builtin

    payload = _json_arg(fmt, payload_text, "--payload")
    directory = snapshots.state_dir(state)
    plan = _plan(fmt, unsigned, directory, required=unsigned is not None)
    from oneiric._flows.host import Unknown, lookup

    cid = f"action:{key}"
    actions = {name: "built-in" for name in BUILTINS}
    if plan is not None:
        actions.update({c.key: "plan" for c in plan.components if c.domain == "action"})
    try:
        in_plan = lookup(actions, key, "action") == "plan"
    except Unknown as exc:
        _fail(fmt, str(exc), 1)
    component = plan.component(cid) if plan is not None and in_plan else None
    module = (
        (component.implementation.module if component and component.implementation else "")
        if in_plan
        else BUILTINS[key].partition(":")[0]
    )
    engine = module == ACTIONS_MODULE
    if engine and plan is None:
        plan = _plan(fmt, unsigned, directory)  # exits 2 naming the missing plan
    limit = _duration_s(timeout)
    _configure_logs(fmt)
    store = _store(fmt, directory) if engine else None

    async def main() -> Any:
        import anyio

        from oneiric._flows.events import EventBus
        from oneiric._flows.host import activated
        from oneiric._flows.workflows import Workflows, _call

        with anyio.fail_after(limit):
            if engine:
                assert plan is not None
                assert store is not None
                handlers, tasks = EventBus.handler_ids(plan), Workflows.task_ids(plan)
                extra = [cid] if in_plan else []
                async with _workflows(plan, tasks, _imports(), store, [*handlers, *extra]) as flows:
                    target = flows.runtime.handle(cid) if in_plan else builtin(key)
                    return await _call(target, payload)
            if not in_plan:
                return await _call(builtin(key), payload)
            assert plan is not None
            async with activated(plan, [cid], _imports()) as runtime:
                return await _call(runtime.handle(cid), payload)

    try:
        result = _run_async(fmt, main)
    except ActionError as exc:
        _fail(fmt, f"action {key}: {exc}", 1)
    except TimeoutError:
        _fail(fmt, f"action {key}: no result within {limit:g}s", 1)
    except Exception as exc:
        _fail(fmt, f"action {key} failed: {type(exc).__name__}: {exc}", 1)
    _emit(fmt, {"action": key, "result": result}, json.dumps(result, indent=2, default=repr))


# -- task ----------------------------------------------------------------------------------
@click.group()
def task() -> None:
    """Run the tasks scheduled by task.schedule; list them."""


@task.command("serve")
@click.option("--poll", default="500ms", show_default=True, help="How often to look for due tasks.")
@UNSIGNED
@STATE
@MODULE_PATH
@STORE
@EVENTS
@VERBOSE
@FORMAT
def task_serve(
    poll: str,
    events_url: str | None,
    unsigned: str | None,
    state: str | None,
    fmt: str,
    verbose: bool,
    module_path: tuple[str, ...],
) -> None:
    """Run scheduled tasks as they fall due, until SIGTERM/SIGINT.

    The schedule is the flow store (STATE/flows.db, or --store shared by
    several `task serve`s, each task claimed by one): tasks scheduled before a
    restart run after it; a task that was running when its runtime died runs
    again.  Its store connection is written every second to
    STATE/schedulers/OWNER.json.
    """
    import os
    import socket

    plan, store = _setup(fmt, unsigned, state, lambda plan: None)
    every = _duration_s(poll)
    imports = _imports()
    name = str(getattr(store, "owner", f"{socket.gethostname()}-{os.getpid()}"))
    status_path = snapshots.state_dir(state) / "schedulers" / f"{name}.json"

    async def main() -> None:
        import signal

        import anyio

        from oneiric._flows.events import EventBus
        from oneiric._flows.schedule import Scheduler
        from oneiric._flows.workflows import Workflows

        tasks = sorted({*Workflows.task_ids(plan), *Scheduler.task_ids(plan)})
        async with (
            _workflows(plan, tasks, imports, store, EventBus.handler_ids(plan)) as flows,
            anyio.create_task_group() as group,
        ):
            group.start_soon(Scheduler(plan, flows.runtime, store).serve, every)
            document = {"kind": "scheduler", "owner": name, "plan": plan.digest}
            group.start_soon(
                fleet.heartbeat, status_path, lambda: document | fleet.links(store, flows)
            )
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            group.cancel_scope.cancel()

    _run_async(fmt, main)
    _emit(fmt, {"stopped": True}, "stopped")


@task.command("list")
@click.option("--limit", default=100, show_default=True)
@STATE
@STORE
@FORMAT
def task_list(limit: int, state: str | None, fmt: str) -> None:
    """Scheduled tasks, soonest due first, with their state."""
    import time

    store = _store(fmt, snapshots.state_dir(state))
    found = store.scheduled(limit)
    lines = [
        f"{s.id}  {s.task:<16} {s.status:<10} "
        f"due {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s.due_at))}"
        + (f"  {s.error}" if s.error else "")
        for s in found
    ]
    _emit(fmt, {"scheduled": [s.as_json() for s in found]}, "\n".join(lines) or "none")
