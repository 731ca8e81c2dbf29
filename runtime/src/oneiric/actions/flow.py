"""Flow actions: emit an event, start a workflow run, schedule a task to run later.

They act on the engine of the process that hosts them (`oneiric._flows.context`):
a workflow node (`oneiric workflow run|resume`, `event emit|consume`, `task
serve`), `oneiric action invoke`, or any call in `oneiric run` and `oneiric
worker` (the app's, a component's: the engine of the plan running then).
Invoked as an action, the payload names what to do; config gives defaults:

- `event.dispatch` {"topic", "payload", "headers"} → the delivery
  (`event_id`, `matched`, `ok`, per-handler `outcomes`); when the host has a
  Redis event transport (`--events`), where it was queued instead (`event_id`,
  `topic`, `stream`, `entry`, `queued`), since no handler has seen it yet;
- `workflow.start` {"workflow", "input", "run_id"} → {"run", "workflow"} (the
  run goes on in the background; an existing `run_id` starts nothing new);
- `task.schedule` {"task", "input", "delay_s", "id"} → {"id", "task", "due_at",
  "scheduled"} (recorded in the flow store; `oneiric task serve` runs it when due,
  even after a restart; an existing `id` schedules nothing new).

As a workflow node (`task notify "dispatch" { impl "oneiric.actions.flow:dispatch";
config { topic = "orders.done" } }`) the target comes from config and the
event payload, the workflow's input or the task's input is
{"input": the run's input, "upstream": the upstream results}; the event id,
the started run's id and the scheduled task's id are "RUN-NODE", so a node
that runs again (a retry, a resumed run) starts or schedules nothing new
(and handlers can tell a redelivered event; on Redis the id is appended
once, see `oneiric._flows.redis_events`).  Every check
(known topic, workflow or task, JSON data, a valid delay) is made before
anything is emitted, started or recorded.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from oneiric.actions import ActionError, require, seconds

if TYPE_CHECKING:
    from oneiric._flows.context import FlowContext


async def _context(action: str) -> FlowContext:
    from oneiric._flows.context import settled

    context = await settled()
    if context is None:
        raise ActionError(
            f"{action} needs a flow host (a workflow node, an event handler's process, "
            "`oneiric run` with a plan that has routes, workflows or flow actions, "
            "or `oneiric action invoke` with a plan)"
        )
    return context


def _node_id() -> str | None:
    from oneiric._flows.context import node

    here = node()
    return None if here is None else f"{here[0]}-{here[1]}"


def _request(
    payload: Any, upstream: dict[str, Any] | None, key: str, default: str | None, body_key: str
) -> tuple[str, Any]:
    """(target, body): from the payload as an action, from config as a workflow node."""
    if upstream is not None:
        if default is None:
            raise ActionError(f'as a workflow node it needs config "{key}"')
        return default, {"input": payload, "upstream": upstream}
    target = require(payload, key, str, default)
    if target is None:
        raise ActionError(f'the payload needs "{key}" (or set it in config)')
    return target, payload.get(body_key)


async def dispatch(
    payload: Any,
    upstream: dict[str, Any] | None = None,
    *,
    topic: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`event.dispatch`: deliver one event to the plan's handlers of its topic (or queue it)."""
    from oneiric._flows.host import Unknown

    context = await _context("event.dispatch")
    name, body = _request(payload, upstream, "topic", topic, "payload")
    extra = {} if upstream is not None else require(payload, "headers", dict, {})
    merged = {**(headers or {}), **extra}
    bad = sorted(k for k, v in merged.items() if not isinstance(v, str))
    if bad:
        raise ActionError(f"header values must be strings: {', '.join(bad)}")
    try:
        context.emitter.route(name)
    except Unknown as exc:
        raise ActionError(str(exc)) from None
    _json(body, "the event payload")
    event_id = _node_id() if upstream is not None else None
    emitted = await context.emitter.emit(name, body, merged, event_id=event_id)
    return emitted.as_json()


async def start(
    payload: Any, upstream: dict[str, Any] | None = None, *, workflow: str | None = None
) -> dict[str, str]:
    """`workflow.start`: start a run in the background; its id."""
    from oneiric._flows.host import Unknown
    from oneiric._flows.workflows import WorkflowError

    context = await _context("workflow.start")
    name, body = _request(payload, upstream, "workflow", workflow, "input")
    run_id = _node_id() if upstream is not None else require(payload, "run_id", str, None)
    try:
        run = await context.workflows.start(name, body, run_id=run_id, trigger="action")
    except (Unknown, WorkflowError) as exc:
        raise ActionError(str(exc)) from None
    return {"run": run, "workflow": name}


async def schedule(
    payload: Any,
    upstream: dict[str, Any] | None = None,
    *,
    task: str | None = None,
    delay: timedelta | float | None = None,
) -> dict[str, Any]:
    """`task.schedule`: record `task` to run after a delay (durable, in the flow store)."""
    from oneiric._flows.schedule import ScheduleError
    from oneiric._flows.schedule import schedule as record
    from oneiric._flows.workflows import WorkflowError, store_io

    context = await _context("task.schedule")
    name, body = _request(payload, upstream, "task", task, "input")
    default = None if delay is None else seconds(delay)
    if upstream is not None:
        delay_s, task_id = default, _node_id()
    else:
        delay_s = require(payload, "delay_s", (int, float), default)
        task_id = require(payload, "id", str, None)
    if delay_s is None:
        raise ActionError('the payload needs "delay_s" (seconds; or set config "delay")')
    if not math.isfinite(delay_s) or delay_s < 0:
        raise ActionError(f"delay_s must be a finite number of seconds >= 0, not {delay_s}")
    try:
        tid, due, new = await store_io(
            context.store, record, context.plan, context.store, name, body, float(delay_s), task_id
        )
    except (ScheduleError, WorkflowError) as exc:
        raise ActionError(str(exc)) from None
    return {"id": tid, "task": name, "due_at": due, "scheduled": new}


def _json(value: Any, what: str) -> None:
    from oneiric._flows.workflows import WorkflowError, to_json

    try:
        to_json(value, what)
    except WorkflowError as exc:
        raise ActionError(str(exc)) from None
