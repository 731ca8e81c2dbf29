"""A component's explanation as text: what `oneiricc explain` prints and hover shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oneiric._plan.model import Component


def render_explanation(component: Component, target: str) -> str:
    exp = component.explanation
    impl = component.implementation
    lines = [
        f'{component.domain} {component.key} → "{component.provider}"   [target {target}]',
        f"  decided by: {exp.rule} — {exp.summary}",
        f"  winner:     {exp.winner['provider']} (layer {exp.winner['layer']}) at "
        f"{exp.winner['span']}",
    ]
    if impl is not None:
        pin = component.pin
        lines.append(
            f"  runs:       {impl.module}:{impl.attr}"
            + (f"  sha256:{pin.sha256[:12]}…" if pin and pin.sha256 else "")
        )
    for refined in exp.refined_by:
        lines.append(f"  refined in: layer {refined['layer']} at {refined['span']}")
    if exp.required_capabilities:
        for cap, who in exp.required_capabilities.items():
            lines.append(f"  requires:   {cap} (by {', '.join(who)})")
    if exp.losers:
        lines.append("  losers:")
        for loser in exp.losers:
            lines.append(f"    {loser['provider']} (layer {loser['layer']}) at {loser['span']}")
            lines.append(f"      lost by {loser['rule']}: {loser['reason']}")
    return "\n".join(lines)
