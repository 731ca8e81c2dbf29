"""Business services of the demo shop."""

from __future__ import annotations

from typing import Any, Protocol


class Payments(Protocol):
    """What a payments service promises (the stacks bind capability `charge` to it)."""

    def charge(self, amount_cents: int) -> str: ...


class OrderService:
    """Creates orders and remembers them in the cache."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.created = 0

    def create(self, order_id: str, region: str) -> dict[str, Any]:
        self.created += 1
        return {"id": order_id, "region": region, "status": "created"}


class SandboxPayments:
    """Accepts every charge without moving money."""

    def __init__(self, **config: Any) -> None:
        self.config = config

    def charge(self, amount_cents: int) -> str:
        return f"sandbox-{amount_cents}"


class LivePayments(SandboxPayments):
    """Talks to the payment provider named in its config."""

    def charge(self, amount_cents: int) -> str:
        return f"live-{amount_cents}"
