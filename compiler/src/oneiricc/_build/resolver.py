"""Resolution: for one target, pick exactly one provider per (domain, key).

Input: the checked `Program` and a target name.  Output: a `Resolution` with
one `Decision` per key, each carrying the deciding rule, the winner and every
loser with the reason it lost (DESIGN §3, the contract):

1. selection   an explicit `select`, the latest layer's winning;
2. capability  candidates lacking a capability a consumer requires drop out;
3. priority    higher wins;
4. layer       a later layer in the target wins;
5. declaration a later declaration wins (a warning; an error under --strict).

Keys are resolved consumers first, so only winners' requirements constrain
the keys they depend on.  Every step is linear in the number of candidates.

`Resolver` is the pure stage.  Its seams, `candidates` (a layer's) and
`decide` (a key's), are what a long-running process
(`_incremental.memos.MemoResolver`) overrides to reuse what its last build
made of the very same objects.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oneiric._plan.document import Domain, Rule

from oneiricc._build import graphs
from oneiricc._build.checker import (
    Decl,
    Graph,
    NotifyRoute,
    Place,
    Program,
    Req,
    Select,
    TargetDecl,
    config_kind,
)
from oneiricc._build.loader import Sources
from oneiricc._language.recovery import Skipped
from oneiricc._language.diagnostics import Diagnostic, Note, Severity, did_you_mean

Key = tuple[str, str]  # (domain, key)
# Everything one key's decision is made from, but the target's name and strictness:
# each candidate's declarations and layer position, the selection, and each consumer
# (its declarations and position) with its requirement.  Equal inputs, equal decision.
# (Compared by value; a declaration of an unchanged file is the very same object, and
# costs a pointer comparison.)
Inputs = tuple[object, ...]


def component_id(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


@dataclass(slots=True)
class Candidate:
    """One provider of a key in the target: its declaration, refinements folded in.

    Never changed once made (a refinement makes a new one: `_refined`), so a
    long-running process may use it again (`_incremental.memos.MemoResolver`).  `priority`,
    `provides`, `requires` and `graph` are read from `fields` once rather than
    at every use: a build reads them tens of thousands of times, from
    candidates all over memory.
    """

    domain: Domain
    key: str
    provider: str
    layer: str
    layer_index: int
    order: int
    place: Place
    fields: dict[str, Any]
    field_places: dict[str, Place]
    layers: list[str]
    decls: tuple[Decl, ...]  # the declaration, then each refinement: all it is made of
    refined_by: list[tuple[str, Place]] = field(default_factory=list)
    priority: int = field(init=False)
    provides: tuple[str, ...] = field(init=False)
    requires: tuple[Req, ...] = field(init=False)
    graph: Graph | None = field(init=False)
    origin: tuple[tuple[Decl, ...], int] = field(init=False)  # what it is made of (`Inputs`)

    def __post_init__(self) -> None:
        fields = self.fields
        self.priority = int(fields.get("priority", 0))
        self.provides = tuple(fields.get("provides", ()))
        self.requires = tuple(fields.get("requires", ()))
        self.graph = fields.get("graph")
        self.origin = (self.decls, self.layer_index)


@dataclass(slots=True)  # not frozen: a frozen dataclass takes three times as long to make
class Loss:
    candidate: Candidate
    rule: Rule
    reason: str


@dataclass(slots=True)
class Decision:
    key: Key
    winner: Candidate
    rule: Rule
    summary: str
    losers: list[Loss]
    selection: Select | None
    required: dict[str, list[str]]  # capability -> consumer ids
    inputs: Inputs | None = None  # what it was decided from, when asked (`resolve`)


@dataclass(slots=True)
class Resolution:
    target: TargetDecl
    files: list[str]  # the target's file and everything it imports
    decisions: dict[Key, Decision]
    diagnostics: list[Diagnostic]
    notifications: list[NotifyRoute] = field(default_factory=list)  # in the plan's order


class Reporter:
    """Collects diagnostics, but none about a key whose declarations (some of them) were
    skipped for syntax errors (`unknown`): it would restate those."""

    def __init__(self, unknown: Skipped | None = None) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.unknown = unknown or Skipped()

    def error(
        self,
        code: str,
        message: str,
        place: Place | None,
        help: str | None = None,
        notes: tuple[Note, ...] = (),
        severity: Severity = Severity.ERROR,
        about: Key | None = None,
        provider: str | None = None,
    ) -> None:
        """`about`: the key the diagnostic is about; `provider`: the provider of it that
        it says is unknown (then only that provider's being skipped silences it)."""
        if about is not None and (
            (about[0], about[1], provider) in self.unknown.providers
            if provider is not None
            else about in self.unknown.keys
        ):
            return
        self.diagnostics.append(
            Diagnostic(
                code,
                message,
                place.file if place else None,
                place.pos if place else None,
                help,
                severity,
                notes,
            )
        )


def note(place: Place, message: str) -> Note:
    return Note(place.file, place.pos, message)


@dataclass(slots=True)
class KeyInputs:
    """What one key's decision is made of, with the target and the strictness."""

    cands: list[Candidate]
    selection: Select | None
    consumers: list[Consumer]


class Resolver:
    """One target's resolution (`resolve`), a layer's candidates (`candidates`) and a
    key's decision (`decide`) at a time: the seams.  While it resolves, `report`
    gathers its diagnostics."""

    report: Reporter
    _target: TargetDecl
    _strict: bool

    def resolve(
        self,
        program: Program,
        sources: Sources,
        target_name: str,
        *,
        strict: bool,
        unknown: Skipped | None = None,
    ) -> Resolution:
        """`unknown`: what the target's files skipped for syntax errors; nothing is
        reported that it could cause."""
        target = program.targets[target_name]
        report = self.report = Reporter(unknown)
        self._target, self._strict = target, strict
        files = sources.visible_from(target.place.file)
        layers = _target_layers(program, target, set(files), report)
        candidates = _merge_candidates(program, layers, report, self.candidates)
        selections = _selections(program, layers, candidates, report)
        decisions = _decide_all(candidates, selections, self.decide)
        _check_requirements(decisions, candidates, report)
        routes: dict[str, NotifyRoute] = {}
        for layer in layers:  # a later layer's route replaces an earlier one of the same name
            routes.update(program.layers[layer].notifications)
        return Resolution(target, files, decisions, report.diagnostics, list(routes.values()))

    def candidates(self, decls: list[Decl], layer_name: str, index: int) -> list[Candidate]:
        """A candidate of each declaration of a layer (those that refine are folded in
        later)."""
        return [_candidate(decl, layer_name, index) for decl in decls]

    def decide(self, key: Key, inputs: KeyInputs) -> Decision | None:
        """The decision of `key` (None: an error, reported)."""
        return _decide(
            key,
            inputs.cands,
            inputs.selection,
            inputs.consumers,
            self._target,
            self._strict,
            self.report,
        )


def resolve(
    program: Program,
    sources: Sources,
    target_name: str,
    *,
    strict: bool,
    unknown: Skipped | None = None,
) -> Resolution:
    return Resolver().resolve(program, sources, target_name, strict=strict, unknown=unknown)


def _target_layers(
    program: Program, target: TargetDecl, visible: set[str], report: Reporter
) -> list[str]:
    layers = []
    for name, place in target.layers:
        layer = program.layers.get(name)
        if layer is None:
            report.error(
                "E0201",
                f"unknown layer {name} in target {target.name}",
                place,
                help=did_you_mean(name, program.layers) or "a layer is a `stack` declaration",
            )
            continue
        if layer.place.file not in visible:
            report.error(
                "E0208",
                f"layer {name} is declared in {layer.place.file}, which {place.file} does not "
                "import",
                place,
                help=f'add `import "{_relative_import(place.file, layer.place.file)}"`',
            )  # then resolve as if imported, so its components cause no further errors
        if name not in layers:
            layers.append(name)
    return layers


def _relative_import(from_file: str, to_file: str) -> str:
    return posixpath.relpath(to_file, posixpath.dirname(from_file) or ".")


def _merge_candidates(
    program: Program,
    layers: list[str],
    report: Reporter,
    make: Callable[[list[Decl], str, int], list[Candidate]],
) -> dict[Key, list[Candidate]]:
    """Candidates per key in (layer, declaration) order, refinements folded in."""
    by_key: dict[Key, list[Candidate]] = {}
    # (domain, key, provider) -> the list of its key's candidates, and its position there
    by_identity: dict[tuple[str, str, str], tuple[list[Candidate], int]] = {}
    for index, layer_name in enumerate(layers):
        decls = program.layers[layer_name].decls
        for decl, cand in zip(decls, make(decls, layer_name, index), strict=True):
            identity = (decl.domain, decl.key, decl.provider)
            found = by_identity.get(identity)
            if found is None:
                same_key = by_key.setdefault(decl.component_key, [])
                by_identity[identity] = (same_key, len(same_key))
                same_key.append(cand)
            else:
                same_key, position = found
                same_key[position] = _refined(same_key[position], decl, report)
    return by_key


def _candidate(decl: Decl, layer_name: str, index: int) -> Candidate:
    return Candidate(
        decl.domain,
        decl.key,
        decl.provider,
        layer_name,
        index,
        decl.order,
        decl.place,
        decl.fields,  # shared with the declaration: neither is ever changed
        decl.field_places,
        [layer_name],
        (decl,),
    )


def _refined(cand: Candidate, decl: Decl, report: Reporter) -> Candidate:
    """`cand` with the refinement `decl` folded in: a new candidate."""
    fields = dict(cand.fields)
    field_places = dict(cand.field_places)
    for name, value in decl.fields.items():
        if name == "config" and "config" in fields:
            fields["config"] = _merge_config(fields["config"], value, decl, report, prefix="")
        else:
            fields[name] = value
        field_places[name] = decl.field_places[name]
    return Candidate(
        cand.domain,
        cand.key,
        cand.provider,
        cand.layer,
        cand.layer_index,
        cand.order,
        cand.place,
        fields,
        field_places,
        [*cand.layers, decl.layer],
        (*cand.decls, decl),
        [*cand.refined_by, (decl.layer, decl.place)],
    )


_UNTYPED = {"env reference", "secret reference"}


def _merge_config(
    old: dict[str, Any], new: dict[str, Any], decl: Decl, report: Reporter, prefix: str
) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if key not in merged:
            merged[key] = value
            continue
        before, after = config_kind(merged[key]), config_kind(value)
        if before == after == "map":
            merged[key] = _merge_config(merged[key], value, decl, report, f"{prefix}{key}.")
        elif before == after or before in _UNTYPED or after in _UNTYPED:
            merged[key] = value
        else:
            report.error(
                "E0402",
                f"config {prefix}{key} changes type from {before} to {after} in stack {decl.layer}",
                decl.field_places["config"],
                help=f"keep {prefix}{key} {'an' if before[0] in 'aeiou' else 'a'} {before}, "
                "as earlier layers declare it",
            )
    return merged


def _selections(
    program: Program,
    layers: list[str],
    candidates: dict[Key, list[Candidate]],
    report: Reporter,
) -> dict[Key, Select]:
    """The effective selection per key: a later layer's replaces an earlier one's."""
    effective: dict[Key, Select] = {}
    for layer_name in layers:
        for key, sel in program.layers[layer_name].selections.items():
            if key not in candidates:
                known = [k for d, k in candidates if d == key[0]]
                report.error(
                    "E0207",
                    f"selection of unknown component {key[0]} {key[1]}",
                    sel.place,
                    help=did_you_mean(key[1], known),
                    about=key,
                )
                continue
            effective[key] = sel
    return effective


Consumer = tuple[Candidate, Req]  # a candidate and one of its requirements


def _decide_all(
    candidates: dict[Key, list[Candidate]],
    selections: dict[Key, Select],
    decide: Callable[[Key, KeyInputs], Decision | None],
) -> dict[Key, Decision]:
    keys = sorted(candidates)  # keys are numbered in this order from here on
    requirers, order = _requirements(candidates, {key: i for i, key in enumerate(keys)})
    decided: list[Decision | None] = [None] * len(keys)
    for i in order:
        key = keys[i]
        consumers = [
            (cand, req)
            for consumer, cand, req in requirers[i]
            if (decision := decided[consumer]) is None or decision.winner is cand
        ]
        decided[i] = decide(key, KeyInputs(candidates[key], selections.get(key), consumers))
    return {
        key: decision for key, decision in zip(keys, decided, strict=True) if decision is not None
    }


def _requirements(
    candidates: dict[Key, list[Candidate]], number: dict[Key, int]
) -> tuple[list[list[tuple[int, Candidate, Req]]], list[int]]:
    """Who requires each key, and the order to decide keys in, by key number.

    Requirements of each key come in candidate order.  The order puts consumers
    before the keys they require (a workflow requires its tasks); ties are
    broken by key for determinism.  Numbers, not keys, because ordering them
    compares and hashes small integers instead of tuples of strings.
    """
    requirers: list[list[tuple[int, Candidate, Req]]] = [[] for _ in number]
    edges: list[tuple[int, int]] = []  # repeated edges change no order
    for key, cands in candidates.items():
        consumer = number[key]
        for cand in cands:
            for req in cand.requires:
                dep = number.get((req.domain, req.key))
                if dep is not None:
                    requirers[dep].append((consumer, cand, req))
                    if dep != consumer:
                        edges.append((consumer, dep))
            if cand.graph is not None:
                for node in cand.graph.nodes.values():
                    dep = number.get(("task", node.task))
                    if dep is not None and dep != consumer:
                        edges.append((consumer, dep))
    return requirers, graphs.condensed_order(range(len(number)), edges)


def decision_inputs(inputs: KeyInputs) -> Inputs:
    """What a decision is made of, compared by value (`Decision.inputs`)."""
    return (
        tuple(c.origin for c in inputs.cands),
        inputs.selection,
        tuple((c.origin, req) for c, req in inputs.consumers),
    )


def _first_requiring(consumers: list[Consumer], cap: str) -> Place:
    """Where `cap` is first required, in source order: the same place in every target.

    (Consumers come in the target's layer order; a diagnostic that pointed at the
    first of those would differ between targets and be reported once per target.)
    """
    return min(req.place for _, req in consumers if cap in req.capabilities)


def _describe(cand: Candidate) -> str:
    return f'{cand.domain} {cand.key} "{cand.provider}"'


def _decide(
    key: Key,
    cands: list[Candidate],
    selection: Select | None,
    consumers: list[Consumer],
    target: TargetDecl,
    strict: bool,
    report: Reporter,
) -> Decision | None:
    name = f"{key[0]} {key[1]}"
    required: dict[str, list[str]] = {}
    for consumer, req in consumers:
        if req.capabilities:
            who = _describe(consumer)
            for cap in req.capabilities:
                required.setdefault(cap, []).append(who)
    required = {cap: sorted(set(who)) for cap, who in sorted(required.items())}
    losers: list[Loss] = []

    # 1. selection
    if selection is not None:
        chosen = next((c for c in cands if c.provider == selection.provider), None)
        if chosen is None:
            report.error(
                "E0203",
                f'unknown provider "{selection.provider}" for {name}',
                selection.provider_place,
                help=did_you_mean(selection.provider, [c.provider for c in cands])
                or f"providers of {name}: {', '.join(sorted(c.provider for c in cands))}",
                about=key,
                provider=selection.provider,
            )
            return None
        missing = [cap for cap in required if cap not in chosen.provides]
        for cap in missing:
            consumer_place = _first_requiring(consumers, cap)
            report.error(
                "E0502",
                f'selected provider "{chosen.provider}" of {name} lacks capability {cap}, '
                f"required by {', '.join(required[cap])}",
                selection.provider_place,
                help=_providers_of(cands, cap, name),
                notes=(note(consumer_place, f"{cap} is required here"),),
                about=key,
            )
        if missing:
            return None
        sel_at = selection.place.span
        for cand in cands:
            if cand is not chosen:
                losers.append(
                    Loss(
                        cand,
                        "selection",
                        f'not selected: select {name} = "{chosen.provider}" at {sel_at}',
                    )
                )
        summary = f'"{chosen.provider}" is selected explicitly at {sel_at}'
        return Decision(key, chosen, "selection", summary, losers, selection, required)

    # 2. capability
    remaining = cands
    if required:
        remaining = []
        for cand in cands:
            provides = cand.provides
            lacking = [cap for cap in required if cap not in provides]
            if lacking:
                cap = lacking[0]
                losers.append(
                    Loss(
                        cand,
                        "capability",
                        f"lacks capability {cap}, required by {', '.join(required[cap])}",
                    )
                )
            else:
                remaining.append(cand)
        if not remaining:
            cap = next(iter(required))
            consumer_place = _first_requiring(consumers, cap)
            report.error(
                "E0501",
                f"no provider of {name} provides {', '.join(required)}, required by "
                f"{', '.join(sorted({w for who in required.values() for w in who}))}",
                consumer_place,
                help=_providers_of(cands, cap, name),
                about=key,
            )
            return None
        if len(remaining) == 1 and len(cands) > 1:
            winner = remaining[0]
            summary = (
                f'"{winner.provider}" is the only provider of {name} with {", ".join(required)}'
            )
            return Decision(key, winner, "capability", summary, losers, None, required)

    if len(remaining) == 1:
        winner = remaining[0]
        return Decision(
            key,
            winner,
            "only",
            f'"{winner.provider}" is the only provider of {name}',
            losers,
            None,
            required,
        )

    # 3. priority
    top = max(c.priority for c in remaining)
    best = []
    for cand in remaining:
        if cand.priority == top:
            best.append(cand)
        else:
            losers.append(Loss(cand, "priority", f"priority {cand.priority} < {top}"))
    if len(best) == 1:
        winner = best[0]
        return Decision(
            key,
            winner,
            "priority",
            f'"{winner.provider}" has the highest priority ({top})',
            losers,
            None,
            required,
        )

    # 4. layer
    last_layer = max(c.layer_index for c in best)
    best_layer = [c for c in best if c.layer_index == last_layer]
    winner_layer = best_layer[0].layer
    for cand in best:
        if cand.layer_index != last_layer:
            losers.append(
                Loss(
                    cand,
                    "layer",
                    f"layer {cand.layer} comes before {winner_layer} in target {target.name}",
                )
            )
    if len(best_layer) == 1:
        winner = best_layer[0]
        return Decision(
            key,
            winner,
            "layer",
            f'"{winner.provider}" is in {winner_layer}, the latest layer with priority {top}',
            losers,
            None,
            required,
        )

    # 5. declaration
    winner = max(best_layer, key=lambda c: c.order)
    for cand in best_layer:
        if cand is not winner:
            losers.append(
                Loss(
                    cand,
                    "declaration",
                    f"declared before {winner.provider} in stack {winner_layer}",
                )
            )
    tied = ", ".join(
        f'"{c.provider}"' for c in sorted(best_layer, key=lambda c: c.provider) if c is not winner
    )
    report.error(
        "W0503",
        f'{name}: "{winner.provider}" wins over {tied} only because it '
        f"is declared later (same priority {top}, same layer {winner_layer})",
        winner.place,
        help=f'give them different priorities, or add `select {name} = "{winner.provider}"`',
        notes=tuple(
            note(c.place, f'"{c.provider}" declared here') for c in best_layer if c is not winner
        ),
        severity=Severity.ERROR if strict else Severity.WARNING,
        about=key,
    )
    return Decision(
        key,
        winner,
        "declaration",
        f'"{winner.provider}" is declared last among equals in {winner_layer}',
        losers,
        None,
        required,
    )


def _providers_of(cands: list[Candidate], cap: str, name: str) -> str:
    listing = "; ".join(
        f'"{c.provider}" provides {", ".join(c.provides) or "nothing"}' for c in cands
    )
    return f"providers of {name}: {listing}"


def _check_requirements(
    decisions: dict[Key, Decision], candidates: dict[Key, list[Candidate]], report: Reporter
) -> None:
    """Requirements and workflow tasks name winners; the winners' graph has no cycle."""
    edge_places: dict[tuple[Key, Key], Place] = {}
    for key, decision in decisions.items():
        for req in decision.winner.requires:
            dep = (req.domain, req.key)
            if dep not in candidates:
                known = [k for d, k in candidates if d == req.domain]
                report.error(
                    "E0206",
                    f"{component_id(key)} requires unknown component {req.domain} {req.key}",
                    req.key_place,
                    help=did_you_mean(req.key, known),
                    about=dep,
                )
                continue
            edge_places.setdefault((key, dep), req.place)
        workflow = decision.winner.graph
        if workflow is not None:
            _check_workflow(key, workflow, candidates, report)
            for node in workflow.nodes.values():
                if ("task", node.task) in candidates:
                    edge_places.setdefault((key, ("task", node.task)), node.task_place)
    for cycle in graphs.cycles(list(decisions), list(edge_places)):
        path = " → ".join(component_id(k) for k in [*cycle, cycle[0]])
        report.error(
            "E0301",
            f"dependency cycle: {path}",
            edge_places[(cycle[0], cycle[1 % len(cycle)])],
            help="break the cycle: one of these components must not require the next",
        )


def _check_workflow(
    key: Key, workflow: Graph, candidates: dict[Key, list[Candidate]], report: Reporter
) -> None:
    for node in workflow.nodes.values():
        if ("task", node.task) not in candidates:
            tasks = [k for d, k in candidates if d == "task"]
            report.error(
                "E0303",
                f"node {node.name} of workflow {key[1]} runs unknown task {node.task}",
                node.task_place,
                help=did_you_mean(node.task, tasks) or 'declare `task NAME "provider" { ... }`',
                about=("task", node.task),
            )
    places: dict[tuple[str, str], Place] = {}
    for a, b, place in workflow.edges:
        places.setdefault((a, b), place)
    for cycle in graphs.cycles(sorted(workflow.nodes), list(places)):
        path = " → ".join([*cycle, cycle[0]])
        report.error(
            "E0302",
            f"workflow {key[1]} has a cycle: {path}",
            places[(cycle[0], cycle[1 % len(cycle)])],
            help="a workflow is a DAG: remove one edge of the cycle",
        )
