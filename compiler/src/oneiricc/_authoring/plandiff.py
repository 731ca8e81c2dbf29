"""Semantic differences between plans, for review (`oneiricc diff`).

Not a text diff: two plans are compared as resolutions.  For each component
the change is classified (added, removed, provider, implementation, pin,
config, settings, explanation), and the cause is traced back to the sources
through the explanation the plan carries: the selection that was added, the
candidate that appeared or disappeared, the rule that now separates them, the
layer that refines the winner.  Spans and source hashes alone are not
changes: moving a declaration down ten lines changes nothing that runs.

Output: human text (concise, or every detail with `verbose`), a JSON
document, or Markdown for a pull-request comment (jinja2 templates shipped
in `oneiricc/templates`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, Literal

from jinja2 import Environment, PackageLoader, StrictUndefined
from oneiric._plan.model import Component, Plan, Route, Workflow
from oneiric._text import plural

from oneiricc._language.diagnostics import Style

DIFF_FORMAT = 1
Kind = Literal["added", "removed", "changed"]
_SPAN = re.compile(r"\S+:[0-9]+:[0-9]+")
_TIME_UNITS = (("h", 3_600_000), ("m", 60_000), ("s", 1000))
_SIZE_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1024))
_SETTINGS = (
    "priority",
    "provides",
    "requires",
    "health",
    "lifecycle",
    "retry",
    "concurrency",
    "subscription",
)  # `layers` follows from the explanation's refinements


@dataclass(slots=True)
class Change:
    """One changed thing: a component, a workflow, a route or a plan-wide setting."""

    subject: str  # "adapter cache", "workflow fulfillment", "route order.created"
    kind: Kind
    aspects: list[str]  # what changed: provider, pin, config, ...
    summary: str  # one line: "provider memory → redis"
    cause: str | None = None  # "because ... at file:line:col"
    details: list[str] = field(default_factory=list)  # every change, for --verbose
    span: str | None = None  # where to look in the new sources (the old ones if removed)

    @property
    def more(self) -> list[str]:
        """The details that the summary line does not already say."""
        return [d for d in self.details if d != self.summary]


@dataclass(slots=True)
class TargetDiff:
    target: str
    status: Literal["added", "removed", "changed", "unchanged"]
    old_digest: str | None
    new_digest: str | None
    components: list[Change] = field(default_factory=list)
    workflows: list[Change] = field(default_factory=list)
    routes: list[Change] = field(default_factory=list)
    plan: list[Change] = field(default_factory=list)  # profile, activation order
    sources: list[str] = field(default_factory=list)  # "M stacks/prod.oneiric", verbose only

    @property
    def changes(self) -> list[Change]:
        return [*self.plan, *self.components, *self.workflows, *self.routes]

    @property
    def provenance_only(self) -> bool:
        """The plans differ (digests), but not in anything that runs: source hashes and
        spans only, as after a formatting-only edit."""
        return self.status == "unchanged" and self.old_digest != self.new_digest

    def changed_sources(self) -> list[str]:
        return [entry[2:] for entry in self.sources if entry.startswith(("M ", "A ", "D "))]

    def counts(self) -> dict[str, int]:
        return {
            "added": sum(c.kind == "added" for c in self.components),
            "removed": sum(c.kind == "removed" for c in self.components),
            "changed": sum(c.kind == "changed" for c in self.components),
            "workflows": len(self.workflows),
            "routes": len(self.routes),
            "plan": len(self.plan),
        }


@dataclass(slots=True)
class PlanDiff:
    targets: list[TargetDiff]

    @property
    def different(self) -> bool:
        return any(t.status != "unchanged" for t in self.targets)

    def counts(self) -> dict[str, int]:
        total = dict.fromkeys(("added", "removed", "changed", "workflows", "routes", "plan"), 0)
        for target in self.targets:
            for key, value in target.counts().items():
                total[key] += value
        total["targets_added"] = sum(t.status == "added" for t in self.targets)
        total["targets_removed"] = sum(t.status == "removed" for t in self.targets)
        return total

    @property
    def provenance_only(self) -> bool:
        return not self.different and any(t.provenance_only for t in self.targets)

    def total_line(self) -> str:
        counts = self.counts()
        if self.provenance_only:
            files = sorted({f for t in self.targets for f in t.changed_sources()})
            return (
                f"No semantic changes: {plural(len(self.targets), 'plan')} compared; only "
                f"provenance differs (source hashes of {', '.join(files) or 'the sources'}, "
                "as after a formatting-only edit): every component and decision is identical."
            )
        if not self.different:
            return f"No changes: {plural(len(self.targets), 'plan')} compared."
        parts = [
            f"{plural(counts['added'], 'component')} added",
            f"{counts['removed']} removed",
            f"{counts['changed']} changed",
        ]
        for key, label in (("workflows", "workflow"), ("routes", "route")):
            if counts[key]:
                parts.append(f"{plural(counts[key], label)} changed")
        if counts["targets_added"] or counts["targets_removed"]:
            parts.append(
                f"targets: {counts['targets_added']} added, {counts['targets_removed']} removed"
            )
        return "Plan changes: " + ", ".join(parts) + "."


# ----------------------------------------------------------------- values --


def show(value: Any) -> str:
    """A config value as it is written in a source (`30s`, `env("X", "d")`)."""
    if isinstance(value, dict):
        if "$duration_ms" in value:
            return _unit(value["$duration_ms"], _TIME_UNITS, "ms")
        if "$bytes" in value:
            return _unit(value["$bytes"], _SIZE_UNITS, "B")
        if "$float" in value:
            return str(value["$float"])
        if "$env" in value:
            default = value.get("default")
            suffix = "" if default is None else f", {show(default)}"
            return f'env("{value["$env"]}"{suffix})'
        if "$secret" in value:
            return f'secret("{value["$secret"]}")'
        return "{ " + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _unit(amount: int, units: tuple[tuple[str, int], ...], base: str) -> str:
    for name, size in units:
        if amount and amount % size == 0:
            return f"{amount // size}{name}"
    return f"{amount}{base}"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config maps as dotted keys; tagged values (`$env`, ...) stay whole."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not any(k.startswith("$") for k in value):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _without_spans(value: Any) -> Any:
    """JSON data with every `file:line:col` blanked: layout is not meaning."""
    if isinstance(value, dict):
        return {k: _without_spans(v) for k, v in value.items() if k != "span"}
    if isinstance(value, list):
        return [_without_spans(v) for v in value]
    if isinstance(value, str):
        return _SPAN.sub("<span>", value)
    return value


def _compare_maps(old: Mapping[str, Any], new: Mapping[str, Any], label: str) -> list[str]:
    lines = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        name = f"{label}{key}"
        if key not in old:
            lines.append(f"{name}: added = {show(after)}")
        elif key not in new:
            lines.append(f"{name}: removed (was {show(before)})")
        elif _without_spans(before) != _without_spans(after):
            lines.append(f"{name}: {show(before)} → {show(after)}")
    return lines


# ------------------------------------------------------------- components --


def _subject(component: Component) -> str:
    return f"{component.domain} {component.key}"


def _selection_text(component: Component) -> str:
    return f'select {_subject(component)} = "{component.provider}"'


def _candidates(component: Component) -> dict[str, str]:
    """provider -> span for the winner and every loser."""
    exp = component.explanation
    return {exp.winner["provider"]: exp.winner["span"]} | {
        loser["provider"]: loser["span"] for loser in exp.losers
    }


def _provider_cause(old: Component, new: Component) -> str:
    old_exp, new_exp = old.explanation, new.explanation
    new_candidates, old_candidates = _candidates(new), _candidates(old)
    if new_exp.selection is not None and (
        old_exp.selection is None or old.provider != new.provider
    ):
        verb = "was added" if old_exp.selection is None else "now selects it"
        return f"because `{_selection_text(new)}` {verb} at {new_exp.selection}"
    if old_exp.selection is not None and new_exp.selection is None:
        return (
            f"because the selection of {old.provider} at {old_exp.selection} was removed; "
            f"now decided by {new_exp.rule}: {new_exp.summary}"
        )
    if new.provider not in old_candidates:
        return (
            f'because "{new.provider}" was added at {new_exp.winner["span"]} '
            f"(layer {new_exp.winner['layer']}) and wins by {new_exp.rule}: {new_exp.summary}"
        )
    if old.provider not in new_candidates:
        return f'because "{old.provider}" was removed (it was declared at {old_exp.winner["span"]})'
    loss = next(loser for loser in new_exp.losers if loser["provider"] == old.provider)
    return (
        f'because "{old.provider}" now loses by {loss["rule"]} ({loss["reason"]}); '
        f"{new_exp.summary}"
    )


def _refinement_cause(old: Component, new: Component) -> str:
    old_layers = {(r["layer"], r["provider"]) for r in old.explanation.refined_by}
    added = [r for r in new.explanation.refined_by if (r["layer"], r["provider"]) not in old_layers]
    if added:
        places = ", ".join(f"{r['span']} (layer {r['layer']})" for r in added)
        return f"because it is refined at {places}"
    refinements = new.explanation.refined_by
    where = refinements[-1]["span"] if refinements else new.explanation.winner["span"]
    return f"set at {where}"


def _explanation_details(old: Component, new: Component) -> list[str]:
    old_exp, new_exp = old.explanation, new.explanation
    lines = []
    if old_exp.rule != new_exp.rule:
        lines.append(f"decided by {new_exp.rule} (was {old_exp.rule}): {new_exp.summary}")
    old_candidates, new_candidates = _candidates(old), _candidates(new)
    for provider in sorted(new_candidates.keys() - old_candidates.keys()):
        lines.append(f'new candidate "{provider}" at {new_candidates[provider]}')
    for provider in sorted(old_candidates.keys() - new_candidates.keys()):
        lines.append(f'candidate "{provider}" is gone (was at {old_candidates[provider]})')
    old_losers = {lo["provider"]: lo for lo in old_exp.losers}
    new_losers = {lo["provider"]: lo for lo in new_exp.losers}
    for provider in sorted(old_losers.keys() & new_losers.keys()):
        before, after = old_losers[provider], new_losers[provider]
        if (before["rule"], _without_spans(before["reason"])) != (
            after["rule"],
            _without_spans(after["reason"]),
        ):
            lines.append(f'"{provider}" now loses by {after["rule"]}: {after["reason"]}')
    if _without_spans(old_exp.required_capabilities) != _without_spans(
        new_exp.required_capabilities
    ):
        caps = ", ".join(
            f"{cap} (by {', '.join(who)})" for cap, who in new_exp.required_capabilities.items()
        )
        lines.append(f"required capabilities: {caps or 'none'}")
    if (old_exp.selection is None) != (new_exp.selection is None):
        lines.append(
            f"selection added at {new_exp.selection}"
            if new_exp.selection
            else f"selection removed (was at {old_exp.selection})"
        )
    old_refined = [r["layer"] for r in old_exp.refined_by]
    new_refined = [r["layer"] for r in new_exp.refined_by]
    if old_refined != new_refined:
        lines.append(
            f"refined by layers {', '.join(new_refined) or 'none'} "
            f"(was {', '.join(old_refined) or 'none'})"
        )
    return lines


def _settings_details(old: Component, new: Component) -> list[str]:
    lines = []
    for name in _SETTINGS:
        before = _without_spans(_json(getattr(old, name)))
        after = _without_spans(_json(getattr(new, name)))
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            lines.extend(_compare_maps(before, after, f"{name}."))
        else:
            lines.append(f"{name}: {_plain(before)} → {_plain(after)}")
    return lines


def _json(value: Any) -> Any:
    if isinstance(value, list):
        return [_json(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _plain(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value) or "none"
    if isinstance(value, list):
        return "; ".join(_plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return " ".join(f"{k}={_plain(v)}" for k, v in value.items() if v not in (None, []))
    return str(value)


def _pin_text(component: Component) -> str:
    pin = component.pin
    if pin is None:
        return "none"
    parts = [pin.file or pin.module]
    if pin.sha256:
        parts.append(f"sha256:{pin.sha256[:12]}")
    if pin.distribution:
        parts.append(f"{pin.distribution} {pin.version or ''}".strip())
    return " ".join(parts)


def _impl_text(component: Component) -> str:
    impl = component.implementation
    return "none" if impl is None else f"{impl.module}:{impl.attr}"


def diff_component(old: Component, new: Component) -> Change | None:
    subject = _subject(new)
    aspects: list[str] = []
    details: list[str] = []
    summary_parts: list[str] = []
    cause = None
    if old.provider != new.provider:
        aspects.append("provider")
        summary_parts.append(f"{old.provider} → {new.provider}")
        cause = _provider_cause(old, new)
    if _impl_text(old) != _impl_text(new):
        aspects.append("implementation")
        details.append(f"implementation: {_impl_text(old)} → {_impl_text(new)}")
    pins_differ = old.pin != new.pin and (
        old.pin is None
        or new.pin is None
        or (old.pin.sha256, old.pin.version, old.pin.distribution, old.pin.file)
        != (new.pin.sha256, new.pin.version, new.pin.distribution, new.pin.file)
    )
    if pins_differ and old.provider == new.provider:
        aspects.append("pin")
        details.append(f"pin: {_pin_text(old)} → {_pin_text(new)}")
    config = _compare_maps(_flatten(old.config), _flatten(new.config), "config ")
    if config:
        aspects.append("config")
        details.extend(config)
    settings = _settings_details(old, new)
    if settings:
        aspects.append("settings")
        details.extend(settings)
    explanation = _explanation_details(old, new)
    if explanation:
        aspects.append("explanation")
        details.extend(explanation)
    if not aspects:
        return None
    if old.provider == new.provider:
        shown = [a for a in aspects if a != "explanation"] or aspects
        summary_parts.append(f'"{new.provider}": ' + ", ".join(shown) + " changed")
        if cause is None and {"config", "settings", "implementation"} & set(aspects):
            cause = _refinement_cause(old, new)
        elif cause is None and "explanation" in aspects:
            cause = explanation[0]
        elif cause is None and "pin" in aspects:
            cause = f"the code of {new.pin.module if new.pin else 'its module'} changed"
    return Change(
        subject,
        "changed",
        aspects,
        "; ".join(summary_parts),
        cause,
        details,
        new.explanation.winner["span"],
    )


def _added(component: Component) -> Change:
    exp = component.explanation
    return Change(
        _subject(component),
        "added",
        ["added"],
        f'"{component.provider}" ({_impl_text(component)})',
        f"declared at {exp.winner['span']} (layer {exp.winner['layer']}); {exp.summary}",
        [f"config {k} = {show(v)}" for k, v in _flatten(component.config).items()],
        exp.winner["span"],
    )


def _removed(component: Component) -> Change:
    span = component.explanation.winner["span"]
    return Change(
        _subject(component),
        "removed",
        ["removed"],
        f'"{component.provider}" ({_impl_text(component)})',
        f"was declared at {span} (layer {component.layer})",
        [],
        span,
    )


# ---------------------------------------------------- workflows and routes --


def _node_text(node: Any) -> dict[str, Any]:
    return _without_spans(node.model_dump(mode="json"))  # type: ignore[no-any-return]


def diff_workflow(old: Workflow | None, new: Workflow | None) -> Change | None:
    if old is None and new is not None:
        order = " → ".join("/".join(level) for level in new.generations)
        return Change(f"workflow {new.key}", "added", ["added"], order, None, [], None)
    if new is None and old is not None:
        return Change(f"workflow {old.key}", "removed", ["removed"], "", None, [], None)
    assert old is not None
    assert new is not None
    details = []
    if old.provider != new.provider:
        details.append(f"provider: {old.provider} → {new.provider}")
    old_nodes = {node.name: node for node in old.nodes}
    new_nodes = {node.name: node for node in new.nodes}
    for name in sorted(new_nodes.keys() - old_nodes.keys()):
        node = new_nodes[name]
        after = ", ".join(node.depends_on) or "start"
        details.append(f"node {name} added (task {node.task}, after {after}) at {node.span}")
    for name in sorted(old_nodes.keys() - new_nodes.keys()):
        details.append(f"node {name} removed")
    for name in sorted(old_nodes.keys() & new_nodes.keys()):
        old_node, new_node = _node_text(old_nodes[name]), _node_text(new_nodes[name])
        for key in sorted(old_node):
            if old_node[key] != new_node[key]:
                details.append(
                    f"node {name} {key}: {_plain(old_node[key])} → {_plain(new_node[key])} "
                    f"at {new_nodes[name].span}"
                )
    if not details:
        return None
    summary = details[0] if len(details) == 1 else f"{len(details)} changes"
    return Change(f"workflow {new.key}", "changed", ["workflow"], summary, None, details, None)


def diff_route(old: Route | None, new: Route | None) -> Change | None:
    if old is None and new is not None:
        summary = f"{new.fanout} to {', '.join(new.handlers)}"
        return Change(f"route {new.topic}", "added", ["added"], summary, None, [], None)
    if new is None and old is not None:
        return Change(f"route {old.topic}", "removed", ["removed"], "", None, [], None)
    assert old is not None
    assert new is not None
    details = []
    if old.handlers != new.handlers:
        details.append(f"handlers: {', '.join(old.handlers)} → {', '.join(new.handlers)}")
    if old.fanout != new.fanout:
        details.append(f"fanout: {old.fanout} → {new.fanout}")
    if not details:
        return None
    return Change(f"route {new.topic}", "changed", ["route"], "; ".join(details), None, details)


# ------------------------------------------------------------------ plans --


def diff_plans(target: str, old: Plan | None, new: Plan | None) -> TargetDiff:
    if old is None or new is None:
        status: Literal["added", "removed"] = "added" if old is None else "removed"
        plan = new or old
        assert plan is not None
        result = TargetDiff(
            target, status, None if old is None else old.digest, None if new is None else new.digest
        )
        make = _added if old is None else _removed
        result.components = [make(c) for c in plan.components]
        return result
    result = TargetDiff(target, "unchanged", old.digest, new.digest)
    old_components = {c.id: c for c in old.components}
    new_components = {c.id: c for c in new.components}
    for cid in sorted(old_components.keys() | new_components.keys()):
        before, after = old_components.get(cid), new_components.get(cid)
        if before is None and after is not None:
            result.components.append(_added(after))
        elif after is None and before is not None:
            result.components.append(_removed(before))
        elif before is not None and after is not None:
            change = diff_component(before, after)
            if change is not None:
                result.components.append(change)
    old_wf = {w.key: w for w in old.workflows}
    new_wf = {w.key: w for w in new.workflows}
    for key in sorted(old_wf.keys() | new_wf.keys()):
        wf_change = diff_workflow(old_wf.get(key), new_wf.get(key))
        if wf_change is not None:
            result.workflows.append(wf_change)
    old_routes = {r.topic: r for r in old.routes}
    new_routes = {r.topic: r for r in new.routes}
    for topic in sorted(old_routes.keys() | new_routes.keys()):
        route_change = diff_route(old_routes.get(topic), new_routes.get(topic))
        if route_change is not None:
            result.routes.append(route_change)
    if old.profile != new.profile:
        result.plan.append(
            Change("profile", "changed", ["profile"], f"{old.profile} → {new.profile}")
        )
    if old.activation_order != new.activation_order and not result.components:
        result.plan.append(
            Change("activation order", "changed", ["order"], " → ".join(new.activation_order))
        )
    old_sources = {s.path: s.sha256 for s in old.sources}
    new_sources = {s.path: s.sha256 for s in new.sources}
    for path in sorted(old_sources.keys() | new_sources.keys()):
        if path not in old_sources:
            result.sources.append(f"A {path}")
        elif path not in new_sources:
            result.sources.append(f"D {path}")
        elif old_sources[path] != new_sources[path]:
            result.sources.append(f"M {path}")
    if result.changes:
        result.status = "changed"
    return result


def diff_plan_sets(old: Mapping[str, Plan], new: Mapping[str, Plan]) -> PlanDiff:
    """Compare plans target by target (a target present on one side only is added/removed)."""
    return PlanDiff(
        [diff_plans(t, old.get(t), new.get(t)) for t in sorted(old.keys() | new.keys())]
    )


# -------------------------------------------------------------- rendering --

_MARK = {"added": "+", "removed": "-", "changed": "~"}
_COLOR = {"added": "32", "removed": "31", "changed": "33"}


def render_human(diff: PlanDiff, *, verbose: bool = False, color: bool = False) -> str:
    style = Style(color)
    lines: list[str] = []
    for target in diff.targets:
        if target.status == "unchanged" and not verbose:
            continue
        head = f"target {target.target}: {target.status}"
        if target.status == "changed" or verbose:
            head += f" ({_short(target.old_digest)} → {_short(target.new_digest)})"
        lines.append(style(head, "1"))
        for change in target.changes:
            mark = style(_MARK[change.kind], _COLOR[change.kind])
            lines.append(f"  {mark} {change.subject}: {change.summary}".rstrip(": "))
            if change.cause:
                lines.append(f"      {change.cause}")
            if verbose:
                lines.extend(f"      · {detail}" for detail in change.more)
        if verbose:
            lines.extend(f"  sources: {entry}" for entry in target.sources)
    lines.append(diff.total_line())
    return "\n".join(lines) + "\n"


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest.removeprefix("sha256:")[:12]


def to_json(diff: PlanDiff) -> dict[str, Any]:
    return {
        "format": "oneiric-plan-diff",
        "version": DIFF_FORMAT,
        "different": diff.different,
        "targets": [asdict(t) | {"counts": t.counts()} for t in diff.targets],
        "summary": diff.counts() | {"line": diff.total_line()},
    }


@cache
def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("oneiricc._authoring", "templates"),
        autoescape=False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = _markdown_cell
    env.filters["short"] = _short
    return env


def _markdown_cell(text: str | None) -> str:
    """Text safe inside a Markdown table cell: spans and code in backticks, pipes escaped."""
    if not text:
        return ""
    text = text.replace("|", "\\|").replace("\n", " ")
    return _SPAN.sub(lambda m: f"`{m.group(0)}`", text)


def render_markdown(diff: PlanDiff, *, verbose: bool = False) -> str:
    return (
        _templates()
        .get_template("plandiff.md.j2")
        .render(diff=diff, targets=diff.targets, verbose=verbose, mark=_MARK)
    )
