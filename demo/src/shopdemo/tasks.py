"""Workflow tasks of the demo shop: `task(order, upstream)`, upstream = results by node name."""

from __future__ import annotations

from typing import Any


def validate_order(order: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    if "id" not in order:
        raise ValueError("order without id")
    return {"valid": True}


def reserve_stock(order: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    return {"reserved": order.get("items", 1)}


def charge_payment(order: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    return {"charged": order.get("total", 0), "items": upstream["reserve"]["reserved"]}


def ship_order(order: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    return {"tracking": f"TRK-{order.get('id', '?')}"}


def send_invoice(order: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    return {"invoice": f"INV-{order.get('id', '?')}", "amount": upstream["charge"]["charged"]}


def notify_email(order: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    return {"notified": "email"}


def notify_sms(order: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    return {"notified": "sms"}


def archive_order(order: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    return {
        "archived": True,
        "tracking": upstream["ship"]["tracking"],
        "invoice": upstream["invoice"]["invoice"],
    }
