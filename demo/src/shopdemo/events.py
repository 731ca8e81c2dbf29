"""Event handlers of the demo shop: `handler(event)` with an `oneiric.events.Event`."""

from __future__ import annotations

from typing import Any

AUDIT_LOG: list[dict[str, Any]] = []


def audit(event: Any) -> dict[str, Any]:
    entry = {"event": event.id, "topic": event.topic, "order": event.payload.get("id")}
    AUDIT_LOG.append(entry)
    return entry


def count_orders(event: Any) -> None:
    return None


async def start_fulfillment(event: Any) -> dict[str, str]:
    """A paid order starts the fulfillment workflow with the order as its input."""
    return {"run": await event.start_workflow("fulfillment", event.payload)}
