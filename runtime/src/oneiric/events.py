"""What an event handler sees (public: stacks name `oneiric.events:start_workflow`),
and `emit`, to emit an event from code hosted by a flow host."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oneiric._flows.events import Event, EventError, start_workflow

__all__ = ["Event", "EventError", "emit", "start_workflow"]


async def emit(
    topic: str, payload: Any = None, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Emit `topic` as `event.dispatch` would, from code a flow host runs: an app or a
    component under `oneiric run` (a plan with routes, workflows or flow actions), a
    handler, a workflow node.  In process the result is the delivery; with `--events`
    where the event was queued.  A refusal (unknown topic, not JSON data, no flow
    host) is an `oneiric.actions.ActionError`; nothing was emitted then."""
    from oneiric.actions.flow import dispatch

    return await dispatch({"topic": topic, "payload": payload, "headers": dict(headers or {})})
