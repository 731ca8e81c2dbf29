"""A component's explanation as text: what `oneiricc explain` prints and hover shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oneiric._plan.model import Component

    from oneiricc._build.capabilities import Fit
    from oneiricc._build.implementations import Contract


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


def check_lines(contract: Contract | None, fits: Mapping[str, Fit]) -> list[str]:
    """What `oneiricc explain` shows of what the build checked of a component against its
    Python source: its implementation and config, and each capability bound to a
    protocol; and why each thing was not checked, when it was not."""
    lines = []
    if contract is not None and not contract.checked:
        lines.append(f"  checked:    no — {contract.reason}")
    elif contract is not None:
        lines.append("  checked:    implementation and config")
        checked = sorted(k for k, why in contract.keys.items() if why is None)
        if checked:
            lines.append(f"    config checked: {', '.join(checked)}")
        for key, why in sorted(contract.keys.items()):
            if why is not None:
                lines.append(f"    config {key} not checked: {why}")
    for capability, fit in sorted(fits.items()):
        if fit.reason is None:
            lines.append(f"  capability: {capability} checked against {fit.protocol}")
        else:
            lines.append(
                f"  capability: {capability} not checked against {fit.protocol} — {fit.reason}"
            )
    return lines
