"""Event handlers of the demo shop."""

from __future__ import annotations

from typing import Any

AUDIT_LOG: list[dict[str, Any]] = []


def audit(event: dict[str, Any]) -> None:
    AUDIT_LOG.append(event)


def count_orders(event: dict[str, Any]) -> None:
    return None


def start_fulfillment(event: dict[str, Any]) -> None:
    return None
