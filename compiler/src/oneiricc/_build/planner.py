"""A target's `Resolution` → the plan the runtime will run, as canonical bytes.

Adds what resolution does not decide: pins for every winner's implementation,
the activation order (dependencies first), each workflow's topological
generations and the event routes.  Everything is ordered by name, so the plan
bytes depend only on the sources.

The plan is built as plain JSON data (`oneiric._plan.document`, the `TypedDict`
mirror of the `oneiric._plan.model` models) and encoded once: no pydantic on the
build path.  The values are already valid here (the checker bounds every
integer and admits no floats), and tests validate every emitted plan with
`oneiric._plan.model.load_plan`, the contract.

`Planner` is the pure stage.  Its seams, `component` and `workflows`, are
what a long-running process (`_incremental.memos.MemoPlanner`) overrides to
reuse the components and workflows of its last build that are made of the
same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from oneiric._plan import document as doc
from oneiric._plan.canonical import array, dumps, encode_members, seal_members

from oneiricc._build import graphs
from oneiricc._build.checker import Impl, Place
from oneiricc._build.loader import Sources
from oneiricc._build.pins import PinError, Pinner
from oneiricc._build.resolver import Candidate, Decision, Key, Resolution, component_id
from oneiricc._language.diagnostics import Diagnostic


@dataclass(frozen=True, slots=True)
class PlanParts:
    """A plan but what depends on the files' raw bytes: its `sources` (and so its digest).

    Whatever leaves every file's checked form unchanged (a comment) changes
    only those; the rest is kept encoded, to be sealed again (`seal`).
    """

    members: dict[str, bytes]  # canonical `"key":value` members, but sources and digest
    files: tuple[str, ...]  # the files `sources` lists, in order
    components: int
    workflows: int
    routes: int


@dataclass(frozen=True, slots=True)
class CompiledPlan:
    """One target's plan: its canonical bytes and digest, and the parts it was sealed from."""

    data: bytes
    digest: str
    parts: PlanParts


Pinned = tuple[doc.Implementation | None, doc.Pin | None]  # a winner's, as it pins now


@dataclass(frozen=True, slots=True)
class Made:
    """A component as made for a plan."""

    inputs: object  # the decision's (`resolver.Decision.inputs`)
    pinned: Pinned
    component: doc.Component
    encoded: bytes  # canonical


@dataclass(frozen=True, slots=True)
class MadeWorkflow:
    """A workflow as made for a plan."""

    winner: Candidate
    workflow: doc.Workflow
    encoded: bytes  # canonical


class Planner:
    """A target's resolution → its plan (`build_plan`), a component and the workflows
    at a time (the seams)."""

    def build_plan(
        self,
        resolution: Resolution,
        sources: Sources,
        pinner: Pinner,
        module_path: list[str] | None = None,
    ) -> tuple[CompiledPlan | None, list[Diagnostic]]:
        """`module_path`: the pinner's directories relative to the project root, as
        recorded."""
        diagnostics: list[Diagnostic] = []
        pins, routes = check_winners(resolution.decisions, pinner, diagnostics)
        if diagnostics:
            return None, diagnostics
        made = [
            self.component(key, decision, pins[key])
            for key, decision in resolution.decisions.items()
            if key in pins
        ]
        components = [m.component for m in made]
        flows = self.workflows(resolution)
        workflows = [flow.workflow for flow in flows]
        body: dict[str, Any] = {  # and "components" and "workflows", encoded one by one
            "format": "oneiric-plan",
            "version": doc.FORMAT_VERSION,
            "target": resolution.target.name,
            "profile": resolution.target.profile,
            "module_path": module_path or [],
            "activation_order": _activation_order(components, workflows),
            "routes": routes,
        }
        if resolution.notifications:  # absent when there are none
            body["notifications"] = [
                {**route.entry, "span": route.place.span} for route in resolution.notifications
            ]
        # numbers_checked: the checker bounds every integer to ±(2**53 - 1) and makes no floats.
        members = encode_members(body, numbers_checked=True)
        members["components"] = dumps("components") + b":" + array(m.encoded for m in made)
        members["workflows"] = dumps("workflows") + b":" + array(flow.encoded for flow in flows)
        parts = PlanParts(
            members,
            tuple(path for path in resolution.files if path in sources.files),
            len(components),
            len(workflows),
            len(routes),
        )
        return seal(parts, sources), diagnostics

    def component(self, key: Key, decision: Decision, pinned: Pinned) -> Made:
        """The component of `decision`, whose winner `check_winners` found plannable."""
        component = _component(decision, pinned)
        return Made(decision.inputs, pinned, component, dumps(component, numbers_checked=True))

    def workflows(self, resolution: Resolution) -> list[MadeWorkflow]:
        """The workflow of each winner that has a graph, in decision order."""
        return [
            self.workflow(key, decision.winner)
            for key, decision in resolution.decisions.items()
            if decision.winner.graph is not None
        ]

    def workflow(self, key: Key, winner: Candidate) -> MadeWorkflow:
        workflow = _workflow(winner)
        return MadeWorkflow(winner, workflow, dumps(workflow, numbers_checked=True))


def build_plan(
    resolution: Resolution,
    sources: Sources,
    pinner: Pinner,
    module_path: list[str] | None = None,
) -> tuple[CompiledPlan | None, list[Diagnostic]]:
    """The plan of `resolution` (None when it has errors) and the diagnostics met."""
    return Planner().build_plan(resolution, sources, pinner, module_path)


def check_winners(
    decisions: Mapping[Key, Decision],
    pinner: Pinner,
    diagnostics: list[Diagnostic],
    settled: Callable[[Key], bool] = lambda key: True,
) -> tuple[dict[Key, Pinned], list[doc.Route]]:
    """What planning checks beyond resolution, for the winners of `decisions`: each has an
    implementation (E0105) that pins (E0602, E0603), each event subscribes to a topic
    (E0107), the subscriptions to one topic agree on fan-out (E0107).  Returns the pins of
    the winners that may be planned, and the routes.

    `settled(key)`: the winner of `key` has all its fields; when not (a layer of its target
    is unknown, or a declaration of its key was skipped for syntax errors), what a missing
    field would cause is not reported: it could restate that earlier error.
    """
    pins: dict[Key, Pinned] = {}
    subscribers: list[Candidate] = []
    for key, decision in decisions.items():
        cand = decision.winner
        complete = settled(key)
        pinned = _pinned(cand, pinner, diagnostics, complete)
        if cand.domain == "event" and "on" not in cand.fields:
            if complete and "on" not in cand.field_places:  # (an invalid one: the checker's)
                _error(
                    diagnostics,
                    "E0107",
                    f'event {cand.key} "{cand.provider}" subscribes to no topic',
                    cand.place,
                    help='add `on "topic.name"`',
                )
            continue
        if cand.domain == "event" and complete:
            subscribers.append(cand)
        if pinned is not None:
            pins[key] = pinned
    return pins, _routes(subscribers, diagnostics)


def plan_errors(
    resolution: Resolution, pinner: Pinner, settled: Callable[[Key], bool]
) -> list[Diagnostic]:
    """What planning a resolution that makes no plan would report (`check_winners`)."""
    diagnostics: list[Diagnostic] = []
    check_winners(resolution.decisions, pinner, diagnostics, settled)
    return diagnostics


def seal(parts: PlanParts, sources: Sources) -> CompiledPlan:
    """The plan of `parts` listing `sources`' files, as they are now, and its digest."""
    listed = [doc.Source(path=path, sha256=sources.files[path].sha256) for path in parts.files]
    data, digest = seal_members({**parts.members, **encode_members({"sources": listed})})
    return CompiledPlan(data, digest, parts)


def _error(
    diagnostics: list[Diagnostic], code: str, message: str, place: Place, help: str | None = None
) -> None:
    diagnostics.append(Diagnostic(code, message, place.file, place.pos, help))


def _pinned(
    cand: Candidate, pinner: Pinner, diagnostics: list[Diagnostic], complete: bool
) -> Pinned | None:
    """The winner's implementation and its pin (none for a workflow); None when it has
    none it may have (reported here, or by the checker for an invalid one, or not at all
    when the winner is not `complete`)."""
    impl: Impl | None = cand.fields.get("impl")
    if impl is None:
        if cand.domain == "workflow":
            return None, None
        if "impl" in cand.field_places or not complete:
            return None  # an invalid impl, already reported by the checker; or unknown
        _error(
            diagnostics,
            "E0105",
            f'{cand.domain} {cand.key} "{cand.provider}" has no implementation',
            cand.place,
            help='add `impl "package.module:attribute"`',
        )
        return None
    try:
        if impl.kind == "module":
            module = doc.Implementation(
                kind="module", module=impl.module, attr=impl.attr, group=None, name=None
            )
            return module, pinner.pin_module(impl.module)
        found = pinner.resolve_entry_point(impl.module, impl.attr)
        entry_point = doc.Implementation(
            kind="entrypoint", module=found.module, attr=found.attr, group=impl.module,
            name=impl.attr,
        )  # fmt: skip
        return entry_point, found.pin
    except PinError as exc:
        code = "E0602" if impl.kind == "module" else "E0603"
        _error(diagnostics, code, str(exc), impl.place, exc.help)
        return None


def _component(decision: Decision, pinned: Pinned) -> doc.Component:
    cand = decision.winner
    fields = cand.fields
    implementation, pin = pinned

    subscription = None
    if cand.domain == "event":  # (it has a topic: `check_winners`)
        subscription = doc.Subscription(
            topic=fields["on"],
            filter=fields.get("where"),
            fanout=fields.get("fanout", "broadcast"),
            retry=_retry(fields.get("retry")),
            concurrency=fields.get("concurrency"),
        )
    interval, timeout = fields.get("health", (None, None))
    is_task = cand.domain == "task"
    # Literals rather than calls of the TypedDicts: a third of the time, for the same dicts.
    return {
        "id": component_id(decision.key),
        "domain": cand.domain,
        "key": cand.key,
        "provider": cand.provider,
        "layer": cand.layer,
        "span": cand.place.span,
        "layers": cand.layers,
        "implementation": implementation,
        "pin": pin,
        "priority": cand.priority,
        "provides": sorted(cand.provides),
        "requires": [
            {
                "domain": r.domain,
                "key": r.key,
                "capabilities": list(r.capabilities),
                "span": r.place.span,
            }
            # A requirement list is a set: its order in the source means nothing.
            for r in sorted(cand.requires, key=lambda r: (r.domain, r.key, r.capabilities))
        ],
        "config": fields.get("config", {}),
        "health": {"interval_ms": interval, "timeout_ms": timeout},
        "lifecycle": {
            "activate_timeout_ms": fields.get("activate"),
            "drain_timeout_ms": fields.get("drain"),
        },
        "retry": _retry(fields.get("retry")) if is_task else None,
        "concurrency": fields.get("concurrency") if is_task else None,
        "subscription": subscription,
        "explanation": _explanation(decision),
    }


def _retry(value: tuple[int, int | None] | None) -> doc.Retry | None:
    return {"attempts": value[0], "backoff_ms": value[1]} if value else None


def _explanation(decision: Decision) -> doc.Explanation:
    winner = decision.winner
    return {
        "rule": decision.rule,
        "summary": decision.summary,
        "winner": {"provider": winner.provider, "layer": winner.layer, "span": winner.place.span},
        "losers": [
            {
                "provider": loss.candidate.provider,
                "layer": loss.candidate.layer,
                "span": loss.candidate.place.span,
                "rule": loss.rule,
                "reason": loss.reason,
            }
            for loss in decision.losers
        ],
        "refined_by": [
            {"provider": winner.provider, "layer": layer, "span": place.span}
            for layer, place in winner.refined_by
        ],
        "selection": decision.selection.place.span if decision.selection else None,
        "required_capabilities": decision.required,
    }


def _activation_order(components: list[doc.Component], workflows: list[doc.Workflow]) -> list[str]:
    """Dependencies first (a workflow depends on its tasks); ties in id order."""
    edges = {
        (f"{req['domain']}:{req['key']}", component["id"])
        for component in components
        for req in component["requires"]
    }
    edges.update(
        (f"task:{node['task']}", f"workflow:{workflow['key']}")
        for workflow in workflows
        for node in workflow["nodes"]
    )
    return graphs.topological_order([c["id"] for c in components], edges)


def _workflow(cand: Candidate) -> doc.Workflow:
    graph = cand.graph
    assert graph is not None
    edges = sorted({(a, b) for a, b, _ in graph.edges})
    upstream: dict[str, set[str]] = {name: set() for name in graph.nodes}
    for a, b in edges:
        upstream[b].add(a)
    nodes = [
        doc.WorkflowNode(
            name=node.name,
            task=node.task,
            depends_on=sorted(upstream[node.name]),
            retry=_retry(node.retry),
            timeout_ms=node.timeout_ms,
            span=node.place.span,
        )
        for node in sorted(graph.nodes.values(), key=lambda node: node.name)
    ]
    generations = graphs.generations(sorted(graph.nodes), edges)
    return doc.Workflow(key=cand.key, provider=cand.provider, nodes=nodes, generations=generations)


def _routes(subscribers: list[Candidate], diagnostics: list[Diagnostic]) -> list[doc.Route]:
    """One route per topic of the winning events `subscribers`."""
    by_topic: dict[str, list[Candidate]] = {}
    for cand in subscribers:
        by_topic.setdefault(cand.fields["on"], []).append(cand)
    routes = []
    for topic in sorted(by_topic):
        handlers = sorted(by_topic[topic], key=lambda c: (-c.priority, c.key))
        modes = {c.fields.get("fanout", "broadcast") for c in handlers}
        if len(modes) > 1:
            exclusive = next(c for c in handlers if c.fields.get("fanout") == "exclusive")
            _error(
                diagnostics,
                "E0107",
                f'subscriptions to "{topic}" disagree on fan-out (broadcast and exclusive)',
                exclusive.field_places.get("fanout", exclusive.place),
                help="every subscription to a topic uses the same fan-out",
            )
            continue
        routes.append(
            doc.Route(topic=topic, fanout=modes.pop(), handlers=[c.key for c in handlers])
        )
    return routes
