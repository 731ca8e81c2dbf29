"""`oneiric list`: the components of the running plan (or of a plan file).

Reads last-good.json and health.json from the state directory, or a plan file
given with --plan; click and the standard library only, like `status`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from oneiric._cli.runtime import FORMAT, STATE, _emit, _fail, _read
from oneiric._lifecycle import snapshots

RUNNING = "running plan"
DOMAINS = ("adapter", "service", "task", "event", "workflow", "action")


@click.command(name="list")
@click.option("--domain", type=click.Choice(DOMAINS), help="Only components of this domain.")
@click.option("--shadowed", is_flag=True, help="Also each losing candidate and why it lost.")
@click.option(
    "--plan",
    "plan_file",
    metavar="PATH",
    help="List this plan file (or a last-good.json) instead of the running plan.",
)
@STATE
@FORMAT
def list_(
    domain: str | None, shadowed: bool, plan_file: str | None, state: str | None, fmt: str
) -> None:
    """Components with provider, deciding rule and health (health: running plan only)."""
    health: dict[str, Any] = {}
    if plan_file is not None:
        plan, serial, where = _plan_file(Path(plan_file), fmt), None, plan_file
    else:
        directory = snapshots.state_dir(state)
        good = _read(directory, snapshots.LAST_GOOD, fmt)
        plan, serial, where = good["plan"], good.get("serial"), RUNNING
        health = _health(directory, plan.get("digest"))
    components = [
        _entry(c, health, shadowed)
        for c in sorted(plan["components"], key=lambda c: str(c["id"]))
        if domain is None or c["domain"] == domain
    ]
    data = {
        "plan": {"target": plan.get("target"), "digest": plan.get("digest"), "serial": serial},
        "source": where,
        "components": components,
    }
    _emit(fmt, data, _text(data, shadowed))


def _plan_file(path: Path, fmt: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        _fail(fmt, f"{path}: {exc.strerror}")
    except ValueError as exc:
        _fail(fmt, f"{path}: not JSON: {exc}")
    if isinstance(data, dict) and path.name == snapshots.LAST_GOOD:
        data = data.get("plan")
    if not isinstance(data, dict) or not isinstance(data.get("components"), list):
        _fail(fmt, f"{path}: not a plan (no components list)")
    return data


def _health(directory: Path, digest: str | None) -> dict[str, Any]:
    """health.json's components when it is current and about the same plan, else none."""
    data = snapshots.read_json(directory / snapshots.HEALTH)
    if (
        not data
        or data.get("plan") != digest
        or data.get("expires_at", 0) < time.time()
        or not snapshots.pid_alive(int(data["pid"]))
    ):
        return {}
    components: dict[str, Any] = data.get("components", {})
    return components


def _entry(component: dict[str, Any], health: dict[str, Any], shadowed: bool) -> dict[str, Any]:
    explanation = component.get("explanation") or {}
    checked = health.get(component["id"])
    entry: dict[str, Any] = {
        "id": component["id"],
        "domain": component["domain"],
        "key": component["key"],
        "provider": component["provider"],
        "rule": explanation.get("rule"),
        "summary": explanation.get("summary"),
        "health": None
        if checked is None
        else ("healthy" if checked["healthy"] else f"unhealthy: {checked['reason']}"),
    }
    if shadowed:
        entry["shadowed"] = [
            {
                "provider": loser["provider"],
                "layer": loser["layer"],
                "rule": loser["rule"],
                "reason": loser["reason"],
            }
            for loser in explanation.get("losers", [])
        ]
    return entry


def _text(data: dict[str, Any], shadowed: bool) -> str:
    plan = data["plan"]
    if plan["serial"] is not None:
        serial = f" serial {plan['serial']}"
    else:
        serial = " unsigned" if data["source"] == RUNNING else ""
    lines = [f"{data['source']}: {plan['target']} {plan['digest']}{serial}"]
    if not data["components"]:
        lines.append("  no components")
    for entry in data["components"]:
        lines.append(
            f"  {entry['id']:<28} {entry['provider']:<16} [{entry['rule']}]"
            + (f"  {entry['health']}" if entry["health"] else "")
        )
        if shadowed:
            lines += [
                f"      shadowed {loser['provider']} (layer {loser['layer']}, {loser['rule']}): "
                f"{loser['reason']}"
                for loser in entry["shadowed"]
            ]
    return "\n".join(lines)
