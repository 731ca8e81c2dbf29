"""Build real, sealed plans for runtime tests, pinned the way the compiler pins them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oneiric._plan.model import Component, Plan
from oneiricc._build.pins import Pinner

HERE = Path(__file__).resolve().parent
_pinner = Pinner([HERE])


def component(
    cid: str,
    provider: str = "one",
    *,
    impl: str = "rtcomponents:Store",
    config: dict[str, Any] | None = None,
    requires: list[str] = (),  # type: ignore[assignment]
    activate_timeout_ms: int | None = None,
    drain_timeout_ms: int | None = None,
    health_timeout_ms: int | None = None,
) -> dict[str, Any]:
    domain, key = cid.split(":")
    module, attr = impl.split(":")
    span = "stacks/test.oneiric:1:1"
    pin = _pinner.pin_module(module)
    return {
        "id": cid,
        "domain": domain,
        "key": key,
        "provider": provider,
        "layer": "test",
        "span": span,
        "layers": ["test"],
        "implementation": {"kind": "module", "module": module, "attr": attr},
        "pin": dict(pin),
        "priority": 0,
        "provides": [],
        "requires": [
            {"domain": r.split(":")[0], "key": r.split(":")[1], "span": span} for r in requires
        ],
        "config": {"tag": f"{key}-{provider}", **(config or {})}
        if domain in ("adapter", "service")
        else (config or {}),
        "health": {"timeout_ms": health_timeout_ms},
        "lifecycle": {
            "activate_timeout_ms": activate_timeout_ms,
            "drain_timeout_ms": drain_timeout_ms,
        },
        "explanation": {
            "rule": "only",
            "summary": f'"{provider}" is the only provider of {domain} {key}',
            "winner": {"provider": provider, "layer": "test", "span": span},
            "losers": [],
        },
    }


def plan(*components: dict[str, Any], target: str = "test", profile: str = "default") -> Plan:
    """A sealed plan; activation order: requirements first, otherwise as given."""
    by_id = {c["id"]: c for c in components}
    order: list[str] = []

    def visit(cid: str) -> None:
        if cid in order:
            return
        for r in by_id[cid]["requires"]:
            visit(f"{r['domain']}:{r['key']}")
        order.append(cid)

    for c in components:
        visit(c["id"])
    return Plan.model_validate(
        {
            "target": target,
            "profile": profile,
            "sources": [],
            "components": [Component.model_validate(c) for c in components],
            "activation_order": order,
            "workflows": [],
            "routes": [],
        }
    ).sealed()
