"""Syntax trees → checked declarations, independent of any target.

The checker gives meaning to what the parser accepted: which domains exist,
which fields each domain takes, what a `30s` or `64MiB` is, which names are
declared twice.  Its output (`Program`) holds only valid, typed values, so the
resolver never has to re-check them.  Every problem becomes a diagnostic; the
checker never stops at the first one.

It runs in two steps.  `check_file` looks at one file alone (nearly all the
work), so its result (`CheckedFile`) can be computed in a forked parse child and kept
in the content-addressed cache beside the parse; `check` then joins the files'
results into one `Program`, reporting stacks and targets declared twice.
"""

from __future__ import annotations

import itertools
import operator
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from oneiric._plan.canonical import MAX_SAFE_INTEGER
from oneiric._plan.document import DOMAINS, NOTIFY_CHANNELS, NOTIFY_CONDITIONS, Domain
from typing_extensions import TypeIs

from oneiricc._language import nodes as n
from oneiricc._language.diagnostics import Diagnostic, Note, did_you_mean

if TYPE_CHECKING:
    from oneiricc._build.loader import Sources

DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
MAX_NESTING = 32
FANOUT_MODES = ("broadcast", "exclusive")
FILTER_ROOTS = ("topic", "payload", "headers")
FUNCTIONS = ("env", "secret")
_QUANTITY = re.compile(r"([0-9]+)([A-Za-z][A-Za-z0-9]*)")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_IMPL = re.compile(rf"({_DOTTED}):({_DOTTED})")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_COMMON_FIELDS = (
    "impl",
    "priority",
    "provides",
    "requires",
    "config",
    "health",
    "activate",
    "drain",
)
ALLOWED_FIELDS: dict[str, tuple[str, ...]] = {
    "adapter": _COMMON_FIELDS,
    "service": _COMMON_FIELDS,
    "action": _COMMON_FIELDS,
    "task": (*_COMMON_FIELDS, "retry", "concurrency"),
    "event": (*_COMMON_FIELDS, "on", "where", "fanout", "retry", "concurrency"),
    "workflow": ("priority", "provides", "requires", "config", "node", "edges"),
}
REPEATABLE_FIELDS = frozenset({"requires", "provides", "node", "edges"})
FIELD_OF: dict[type, str] = {
    n.ImplRef: "impl",
    n.ImplEntryPoint: "impl",
    n.Priority: "priority",
    n.Provides: "provides",
    n.Requires: "requires",
    n.Config: "config",
    n.Health: "health",
    n.OnTopic: "on",
    n.Where: "where",
    n.Fanout: "fanout",
    n.Retry: "retry",
    n.Concurrency: "concurrency",
    n.Node: "node",
    n.Edges: "edges",
}

# --------------------------------------------------------------- the model --

_R = TypeVar("_R")
_new_tuple = tuple.__new__  # a named tuple without its Python-level __new__


def _pickled_as_call(cls: type[_R]) -> type[_R]:
    """Pickle a slotted dataclass as `cls(*fields)`.

    Unpickling one otherwise runs dataclasses' generic `__setstate__`, which
    looks its fields up again for every object: about twice the cost, and the
    cache loads tens of thousands of these in every rebuild.
    """
    values = operator.attrgetter(*(f.name for f in fields(cls)))  # type: ignore[arg-type]

    def __reduce__(self: _R) -> tuple[type[_R], tuple[Any, ...]]:
        return cls, values(self)

    setattr(cls, "__reduce__", __reduce__)  # noqa: B010 - mypy refuses a method assignment
    return cls


class Place(NamedTuple):
    """A position in a named file.

    Flat, one tuple rather than a file and a `Pos`: the checker makes one per
    field, and the cache loads tens of thousands of them in every rebuild.
    """

    file: str
    line: int
    col: int
    width: int

    @property
    def pos(self) -> n.Pos:
        return n.Pos(self.line, self.col, self.width)

    @property
    def span(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@_pickled_as_call
@dataclass(frozen=True, slots=True)
class Impl:
    kind: str  # "module" | "entrypoint"
    module: str  # for entry points: the group
    attr: str  # for entry points: the name
    place: Place


@_pickled_as_call
@dataclass(frozen=True, slots=True)
class Req:
    domain: Domain
    key: str
    capabilities: tuple[str, ...]
    place: Place  # the `requires` statement: its span goes into the plan
    key_place: Place  # the required key: where an unknown-component error points


@_pickled_as_call
@dataclass(frozen=True, slots=True)
class WorkflowNode:
    name: str
    task: str
    retry: tuple[int, int | None] | None
    timeout_ms: int | None
    place: Place
    task_place: Place


@_pickled_as_call
@dataclass(frozen=True, slots=True)
class Graph:
    nodes: dict[str, WorkflowNode]
    edges: tuple[tuple[str, str, Place], ...]


@_pickled_as_call
@dataclass(slots=True)
class Decl:
    """One component declaration, holding only the fields it sets."""

    domain: Domain
    key: str
    provider: str
    layer: str
    order: int  # position among the declarations of its layer
    place: Place
    fields: dict[str, Any] = field(default_factory=dict)
    field_places: dict[str, Place] = field(default_factory=dict)

    @property
    def component_key(self) -> tuple[str, str]:
        return (self.domain, self.key)


@_pickled_as_call
@dataclass(frozen=True, slots=True)
class Select:
    domain: Domain
    key: str
    provider: str
    place: Place
    provider_place: Place


@_pickled_as_call
@dataclass(frozen=True, slots=True)
class Binding:
    """`capability DOMAIN KEY NAME = "module:Protocol"`: providing NAME promises Protocol."""

    domain: Domain
    key: str
    capability: str
    module: str
    attr: str
    place: Place
    protocol_place: Place

    @property
    def protocol(self) -> str:
        return f"{self.module}:{self.attr}"


@_pickled_as_call
@dataclass(frozen=True, slots=True)
class NotifyRoute:
    """A checked `notify` route: its plan entry (but the span) and where it is declared."""

    name: str
    entry: dict[str, Any]
    place: Place


@_pickled_as_call
@dataclass(slots=True)
class Layer:
    name: str
    place: Place
    decls: list[Decl]
    selections: dict[tuple[str, str], Select]
    bindings: dict[tuple[str, str, str], Binding] = field(default_factory=dict)
    plugins: tuple[tuple[str, Place], ...] = ()  # `plugins "group"` lines (see plugins.py)
    notifications: dict[str, NotifyRoute] = field(default_factory=dict)


@_pickled_as_call
@dataclass(frozen=True, slots=True)
class TargetDecl:
    name: str
    place: Place
    layers: tuple[tuple[str, Place], ...]
    profile: str


@_pickled_as_call
@dataclass(slots=True)
class CheckedFile:
    """One file checked on its own: what later stages need of it, without its syntax tree.

    Each stack and target keeps the diagnostics found inside it: when another
    declaration of the same name comes first, `check` drops it with them.
    """

    imports: tuple[n.Import, ...]
    stacks: list[tuple[Layer, list[Diagnostic]]]
    targets: list[tuple[TargetDecl, list[Diagnostic]]]


@dataclass(slots=True)
class Program:
    layers: dict[str, Layer]
    targets: dict[str, TargetDecl]
    diagnostics: list[Diagnostic]


# ------------------------------------------------------------- the checker --


def check_file(module: n.Module) -> CheckedFile:
    return _FileChecker(module.path).check(module)


def check(sources: Sources) -> Program:
    """Join the checked files, in path order: the first stack or target of a name wins."""
    program = Program(layers={}, targets={}, diagnostics=[])
    for path in sorted(sources.checked):
        checked = sources.checked[path]
        stack_help = "rename one of them; a stack is one layer of a target"
        _join(program, program.layers, checked.stacks, "stack", path, stack_help)
        _join(program, program.targets, checked.targets, "target", path, None)
    return program


_Declared = TypeVar("_Declared", Layer, TargetDecl)


def _join(
    program: Program,
    declared: dict[str, _Declared],
    items: list[tuple[_Declared, list[Diagnostic]]],
    kind: str,
    path: str,
    help: str | None,
) -> None:
    for item, diagnostics in items:
        first = declared.get(item.name)
        if first is None:
            declared[item.name] = item
            program.diagnostics.extend(diagnostics)
            continue
        program.diagnostics.append(
            Diagnostic(
                "E0103",
                f"{kind} {item.name} is declared twice",
                path,
                item.place.pos,
                help=help,
                notes=(Note(first.place.file, first.place.pos, "first declared"),),
            )
        )


def config_kind(value: Any) -> str:
    """The type name of a checked config value, for type-mismatch messages."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        tags = {
            "$duration_ms": "duration",
            "$bytes": "size",
            "$float": "float",
            "$env": "env reference",
            "$secret": "secret reference",
        }
        for tag, name in tags.items():
            if tag in value:
                return name
        return "map"
    return type(value).__name__  # pragma: no cover - the checker makes no other values


class _FileChecker:
    def __init__(self, path: str) -> None:
        self.path = path
        self.diagnostics: list[Diagnostic] = []  # of the stack or target being checked

    def place(self, pos: n.Pos) -> Place:
        return _new_tuple(Place, (self.path, *pos))

    def error(
        self,
        code: str,
        message: str,
        pos: n.Pos,
        help: str | None = None,
        notes: tuple[Note, ...] = (),
    ) -> None:
        self.diagnostics.append(Diagnostic(code, message, self.path, pos, help, notes=notes))

    # -- declarations ----------------------------------------------------------
    def check(self, module: n.Module) -> CheckedFile:
        checked = CheckedFile(module.imports, [], [])
        for stack in module.stacks:
            self.diagnostics = []
            checked.stacks.append((self.stack(stack), self.diagnostics))
        for target in module.targets:
            self.diagnostics = []
            checked.targets.append((self.target(target), self.diagnostics))
        return checked

    def stack(self, stack: n.Stack) -> Layer:
        layer = Layer(stack.name, self.place(stack.pos), [], {})
        seen: dict[tuple[str, str, str], Decl] = {}
        for component in stack.components:
            decl = self.component(component, layer)
            if decl is None:
                continue
            identity = (decl.domain, decl.key, decl.provider)
            first = seen.get(identity)
            if first is not None:
                self.error(
                    "E0102",
                    f'{decl.domain} {decl.key} "{decl.provider}" is declared twice in stack '
                    f"{stack.name}",
                    component.pos,
                    help="merge the two declarations, or refine it from a later stack",
                    notes=(Note(first.place.file, first.place.pos, "first declared"),),
                )
                continue
            seen[identity] = decl
            layer.decls.append(decl)
        for selection in stack.selections:
            self.selection(selection, layer)
        for capability in stack.capabilities:
            self.binding(capability, layer)
        groups: dict[str, Place] = {}
        for line in stack.plugins:
            if not line.group.strip() or any(ch.isspace() for ch in line.group):
                self.error(
                    "E1003",
                    f'"{line.group}" is not an entry point group',
                    line.group_pos,
                    help='name the group the plugins declare, e.g. plugins "oneiric.components"',
                )
                continue
            groups.setdefault(line.group, self.place(line.pos))
        layer.plugins = tuple(groups.items())
        for notify in stack.notifications:
            self.notification(notify, layer)
        return layer

    def notification(self, notify: n.Notify, layer: Layer) -> None:
        first = layer.notifications.get(notify.name)
        if first is not None:
            self.error(
                "E0904",
                f"notification route {notify.name} is declared twice in stack {layer.name}",
                notify.pos,
                help="merge the two routes, or give them different names",
                notes=(Note(first.place.file, first.place.pos, "first declared"),),
            )
            return
        when: list[dict[str, Any]] = []
        channels: list[dict[str, Any]] = []
        rate: dict[str, int] | None = None
        ok = True
        for item in notify.fields:
            match item:
                case n.NotifyWhen(_, conditions):
                    for condition in conditions:
                        checked = self.notify_condition(condition)
                        ok = ok and checked is not None
                        when += [checked] if checked is not None else []
                case n.NotifySend(_, kind, kind_pos, values):
                    channel = self.notify_channel(kind, kind_pos, values)
                    ok = ok and channel is not None
                    channels += [channel] if channel is not None else []
                case n.NotifyRate(pos, limit, per):
                    per_ms = self.duration(per)
                    if limit.value < 1 or not per_ms:
                        if per_ms is not None:
                            self.error(
                                "E0904",
                                "a rate is a positive count per a positive duration",
                                pos,
                                help="for example: rate 10 per 1h",
                            )
                        ok = False
                        continue
                    rate = {"count": limit.value, "per_ms": per_ms}
        if ok and not when:
            self.error(
                "E0904",
                f"notification route {notify.name} reports no condition",
                notify.pos,
                help="add one, for example: when plan_rejected, component_unhealthy 3",
            )
            ok = False
        if ok and not channels:
            self.error(
                "E0904",
                f"notification route {notify.name} sends to no channel",
                notify.pos,
                help='add one, for example: send slack { url = secret("alerts/slack") }',
            )
            ok = False
        if ok:
            entry = {"name": notify.name, "when": when, "channels": channels, "rate": rate}
            layer.notifications[notify.name] = NotifyRoute(
                notify.name, entry, self.place(notify.pos)
            )

    def notify_condition(self, condition: n.NotifyCondition) -> dict[str, Any] | None:
        name, arg = condition.name, condition.arg
        if name not in NOTIFY_CONDITIONS:
            self.error(
                "E0901",
                f'unknown notification condition "{name}"',
                condition.pos,
                help=did_you_mean(name, NOTIFY_CONDITIONS)
                or f"conditions: {', '.join(NOTIFY_CONDITIONS)}",
            )
            return None
        checks = within = None
        if name == "component_unhealthy" and arg is not None:
            if not isinstance(arg, n.Int) or arg.value < 1:
                self.error(
                    "E0904",
                    "component_unhealthy takes a number of failed checks in a row",
                    arg.pos,
                    help="for example: when component_unhealthy 3",
                )
                return None
            checks = arg.value
        elif name == "manifest_expiring":
            if not isinstance(arg, n.Quantity):
                self.error(
                    "E0904",
                    "manifest_expiring needs how long before the expiry to report",
                    arg.pos if arg is not None else condition.pos,
                    help="for example: when manifest_expiring 7d",
                )
                return None
            within = self.duration(arg)
            if within is None:
                return None
        elif arg is not None:
            self.error("E0904", f"{name} takes no argument", arg.pos)
            return None
        return {"condition": name, "checks": checks, "within_ms": within}

    def notify_channel(self, kind: str, kind_pos: n.Pos, values: n.Map) -> dict[str, Any] | None:
        if kind not in NOTIFY_CHANNELS:
            self.error(
                "E0902",
                f'unknown notification channel "{kind}"',
                kind_pos,
                help=did_you_mean(kind, NOTIFY_CHANNELS)
                or f"channels: {', '.join(NOTIFY_CHANNELS)}",
            )
            return None
        config = self.map_value(values, depth=0)
        if config is None:
            return None
        if "kind" in config:
            self.error("E0904", '"kind" is not a channel field', values.pos)
            return None
        missing = [name for name in NOTIFY_CHANNELS[kind] if name not in config]
        if missing:
            needed = ", ".join(f"{name} = ..." for name in NOTIFY_CHANNELS[kind])
            self.error(
                "E0903",
                f"send {kind} needs {' and '.join(missing)}",
                kind_pos,
                help=f"write send {kind} {{ {needed} }}",
            )
            return None
        return {"kind": kind, **config}

    def binding(self, cap: n.Capability, layer: Layer) -> None:
        if not self.domain_ok(cap.domain, cap.domain_pos):
            return
        match = _IMPL.fullmatch(cap.protocol)
        if match is None:
            self.error(
                "E0802",
                f'malformed protocol "{cap.protocol}"',
                cap.protocol_pos,
                help='write "package.module:Protocol", for example "oneiric.protocols:Cache"',
            )
            return
        identity = (cap.domain, cap.key, cap.name)
        first = layer.bindings.get(identity)
        if first is not None:
            self.error(
                "E0803",
                f"capability {cap.name} of {cap.domain} {cap.key} is bound twice in stack "
                f"{layer.name}",
                cap.pos,
                help="keep one binding per capability",
                notes=(Note(first.place.file, first.place.pos, "first bound"),),
            )
            return
        layer.bindings[identity] = Binding(
            cap.domain,
            cap.key,
            cap.name,
            match[1],
            match[2],
            self.place(cap.pos),
            self.place(cap.protocol_pos),
        )

    def selection(self, sel: n.Selection, layer: Layer) -> None:
        if not self.domain_ok(sel.domain, sel.domain_pos):
            return
        checked = Select(
            sel.domain, sel.key, sel.provider, self.place(sel.pos), self.place(sel.provider_pos)
        )
        first = layer.selections.get((sel.domain, sel.key))
        if first is not None:
            self.error(
                "E0102",
                f"{sel.domain} {sel.key} is selected twice in stack {layer.name}",
                sel.pos,
                help="keep one selection per component in a stack",
                notes=(Note(first.place.file, first.place.pos, "first selected"),),
            )
            return
        layer.selections[(sel.domain, sel.key)] = checked

    def target(self, target: n.Target) -> TargetDecl:
        if not target.layers:
            self.error(
                "E0107",
                f"target {target.name} names no layers",
                target.pos,
                help="add `layers base, app` with the stacks in order",
            )
        seen: set[str] = set()
        for name, pos in target.layers:
            if name in seen:
                self.error("E0107", f"layer {name} is listed twice in target {target.name}", pos)
            seen.add(name)
        profile = target.profile[0] if target.profile else "default"
        return TargetDecl(
            target.name,
            self.place(target.pos),
            tuple((name, self.place(pos)) for name, pos in target.layers),
            profile,
        )

    def domain_ok(self, domain: str, pos: n.Pos) -> TypeIs[Domain]:
        if domain in DOMAINS:
            return True
        self.error(
            "E0101",
            f'unknown domain "{domain}"',
            pos,
            help=did_you_mean(domain, DOMAINS) or f"domains are {', '.join(DOMAINS)}",
        )
        return False

    def component(self, component: n.Component, layer: Layer) -> Decl | None:
        if not self.domain_ok(component.domain, component.domain_pos):
            return None
        decl = Decl(
            component.domain,
            component.key,
            component.provider,
            layer.name,
            len(layer.decls),
            self.place(component.pos),
        )
        allowed = ALLOWED_FIELDS[decl.domain]
        for item in component.fields:
            name = item.phase if isinstance(item, n.Timeout) else FIELD_OF[type(item)]
            if name not in allowed:
                self.error(
                    "E0104",
                    f"`{name}` is not a field of {decl.domain} components",
                    item.pos,
                    help=f"{decl.domain} components take: {', '.join(allowed)}",
                )
                continue
            if name in decl.field_places and name not in REPEATABLE_FIELDS:
                first = decl.field_places[name]
                self.error(
                    "E0104",
                    f'`{name}` is set twice in {decl.domain} {decl.key} "{decl.provider}"',
                    item.pos,
                    notes=(Note(first.file, first.pos, "first set"),),
                )
                continue
            self.field(decl, name, item)
        if decl.domain == "workflow" and "node" in decl.fields:
            self.close_graph(decl)
        return decl

    def field(self, decl: Decl, name: str, item: n.Field) -> None:
        # Recorded even when the value is invalid, so the planner does not report it as missing.
        decl.field_places.setdefault(name, self.place(item.pos))
        value: Any
        match item:
            case n.ImplRef(pos, target, target_pos):
                match = _IMPL.fullmatch(target)
                if match is None:
                    self.error(
                        "E0601",
                        f'malformed implementation "{target}"',
                        target_pos,
                        help='write "package.module:attribute" or `impl entrypoint "group" "name"`',
                    )
                    return
                value = Impl("module", match[1], match[2], self.place(target_pos))
            case n.ImplEntryPoint(pos, group, ep_name):
                if not group or not ep_name:
                    self.error("E0601", "an entry point needs a group and a name", pos)
                    return
                value = Impl("entrypoint", group, ep_name, self.place(pos))
            case n.Priority(pos, priority):
                if abs(priority) > 2**31:
                    self.error("E0403", f"priority {priority} is out of range (±2^31)", pos)
                    return
                value = priority
            case n.Provides(_, capabilities):
                value = tuple(sorted({*decl.fields.get("provides", ()), *capabilities}))
            case n.Requires(pos, domain, domain_pos, key, key_pos, capabilities):
                if not self.domain_ok(domain, domain_pos):
                    return
                caps = tuple(sorted(set(capabilities)))
                req = Req(domain, key, caps, self.place(pos), self.place(key_pos))
                value = (*decl.fields.get("requires", ()), req)
            case n.Config(_, values):
                value = self.map_value(values, depth=0)
                if value is None:
                    return
                for entry in values.entries:  # where each key is set: implementation checks
                    decl.field_places[f"config.{entry.key}"] = self.place(entry.pos)
            case n.Health(pos, every, timeout):
                value = (self.duration(every), self.duration(timeout))
            case n.Timeout(_, _, quantity):
                value = self.duration(quantity)
            case n.OnTopic(pos, topic):
                if not topic:
                    self.error("E0107", "an event topic cannot be empty", pos)
                    return
                value = topic
            case n.Where(_, expr):
                value = self.expr(expr, depth=0)
                if value is None:
                    return
            case n.Fanout(_, mode, mode_pos):
                if mode not in FANOUT_MODES:
                    self.error(
                        "E0107",
                        f'unknown fan-out "{mode}"',
                        mode_pos,
                        help=did_you_mean(mode, FANOUT_MODES) or "use broadcast or exclusive",
                    )
                    return
                value = mode
            case n.Retry():
                value = self.retry(item)
            case n.Concurrency(pos, limit):
                if not 1 <= limit <= MAX_SAFE_INTEGER:
                    self.error("E0107", "concurrency must be at least 1", pos)
                    return
                value = limit
            case n.Node():
                self.node(decl, item)
                return
            case n.Edges(_, names):
                graph_edges = decl.fields.setdefault("edges", [])
                for (a, a_pos), (b, _) in itertools.pairwise(names):
                    graph_edges.append((a, b, self.place(a_pos)))
                for node_name, node_pos in names:
                    self.implicit_node(decl, node_name, node_pos)
                decl.field_places.setdefault("edges", self.place(item.pos))
                return
        decl.fields[name] = value

    # -- workflows -------------------------------------------------------------
    def node(self, decl: Decl, node: n.Node) -> None:
        nodes: dict[str, WorkflowNode] = decl.fields.setdefault("node", {})
        explicit: set[str] = decl.fields.setdefault("explicit_nodes", set())
        if node.name in explicit:
            first = nodes[node.name].place
            self.error(
                "E0106",
                f"node {node.name} is declared twice in workflow {decl.key}",
                node.pos,
                notes=(Note(first.file, first.pos, "first declared"),),
            )
            return
        task, task_pos = node.name, node.pos
        retry = None
        timeout_ms = None
        for item in node.fields:
            match item:
                case n.NodeTask(pos, task_name):
                    task, task_pos = task_name, pos
                case n.Retry():
                    retry = self.retry(item)
                case n.NodeTimeout(_, quantity):
                    timeout_ms = self.duration(quantity)
        explicit.add(node.name)
        nodes[node.name] = WorkflowNode(
            node.name, task, retry, timeout_ms, self.place(node.pos), self.place(task_pos)
        )
        decl.field_places.setdefault("node", self.place(node.pos))

    def implicit_node(self, decl: Decl, name: str, pos: n.Pos) -> None:
        nodes: dict[str, WorkflowNode] = decl.fields.setdefault("node", {})
        if name not in nodes:
            place = self.place(pos)
            nodes[name] = WorkflowNode(name, name, None, None, place, place)
            decl.field_places.setdefault("node", place)

    def close_graph(self, decl: Decl) -> None:
        """Fold nodes and edges into one `graph` field: a refinement replaces it whole."""
        nodes = decl.fields.pop("node")
        decl.fields.pop("explicit_nodes", None)
        edges = tuple(decl.fields.pop("edges", ()))
        decl.fields["graph"] = Graph(nodes, edges)
        decl.field_places["graph"] = decl.field_places.pop("node")
        decl.field_places.pop("edges", None)

    def retry(self, item: n.Retry) -> tuple[int, int | None] | None:
        if item.attempts > 1000:
            self.error("E0107", f"retry {item.attempts} is more than 1000 attempts", item.pos)
            return None
        return (item.attempts, self.duration(item.backoff))

    # -- values ------------------------------------------------------------------
    def quantity(self, q: n.Quantity) -> tuple[str, int] | None:
        """("duration", ms) or ("size", bytes), or None after reporting E0401."""
        match = _QUANTITY.fullmatch(q.text)
        if match and len(match[1]) > 30:  # beyond any range, and too long for int()
            self.error("E0403", f'"{q.text[:20]}…" is too large', q.pos)
            return None
        number, unit = (int(match[1]), match[2]) if match else (0, q.text)
        if unit in DURATION_UNITS:
            kind, value = "duration", number * DURATION_UNITS[unit]
        elif unit in SIZE_UNITS:
            kind, value = "size", number * SIZE_UNITS[unit]
        else:
            units = [*DURATION_UNITS, *SIZE_UNITS]
            self.error(
                "E0401",
                f'malformed duration or size "{q.text}": unknown unit "{unit}"',
                q.pos,
                help=did_you_mean(unit, units)
                or f"durations take {', '.join(DURATION_UNITS)}; "
                f"sizes take {', '.join(SIZE_UNITS)}",
            )
            return None
        if value > MAX_SAFE_INTEGER:
            self.error("E0403", f'"{q.text}" is too large', q.pos)
            return None
        return kind, value

    def duration(self, q: n.Quantity | None) -> int | None:
        if q is None:
            return None
        measured = self.quantity(q)
        if measured is None:
            return None
        kind, value = measured
        if kind != "duration":
            self.error(
                "E0401",
                f'expected a duration, found the size "{q.text}"',
                q.pos,
                help="durations take ms, s, m, h or d",
            )
            return None
        return value

    def value(self, value: n.Value, depth: int) -> Any:
        """A checked config value (see `oneiric._plan.model`), or None after an error."""
        if depth > MAX_NESTING:
            self.error("E0006", f"values nest deeper than {MAX_NESTING} levels", value.pos)
            return None
        match value:
            case n.Str(_, text):
                return text
            case n.Bool(_, flag):
                return flag
            case n.Int(pos, number):
                if abs(number) > MAX_SAFE_INTEGER:
                    self.error(
                        "E0403",
                        f"integer {number} is out of range",
                        pos,
                        help="integers must lie within ±(2^53 - 1) to survive JSON readers",
                    )
                    return None
                return number
            case n.Float(_, text):
                return {"$float": text}
            case n.Quantity():
                measured = self.quantity(value)
                if measured is None:
                    return None
                kind, amount = measured
                return {"$duration_ms": amount} if kind == "duration" else {"$bytes": amount}
            case n.List(pos, items):
                checked = [self.value(item, depth + 1) for item in items]
                if any(item is None for item in checked):
                    return None
                kinds = sorted({config_kind(item) for item in checked})
                if len(kinds) > 1:
                    self.error(
                        "E0402",
                        f"list mixes {' and '.join(kinds)} values",
                        pos,
                        help="a list holds values of one type",
                    )
                    return None
                return checked
            case n.Map():
                return self.map_value(value, depth + 1)
            case n.Call():
                return self.call(value, depth)
        raise AssertionError(value)  # pragma: no cover

    def map_value(self, value: n.Map, depth: int) -> dict[str, Any] | None:
        result: dict[str, Any] = {}
        ok = True
        places: dict[str, n.Pos] = {}
        for entry in value.entries:
            if entry.key in places:
                first = places[entry.key]
                self.error(
                    "E0402",
                    f'key "{entry.key}" is set twice',
                    entry.pos,
                    notes=(Note(self.path, first, "first set"),),
                )
                ok = False
                continue
            if not entry.key or entry.key.startswith("$"):
                self.error(
                    "E0402",
                    f'config key "{entry.key}" is reserved',
                    entry.pos,
                    help='keys starting with "$" tag typed values in the plan',
                )
                ok = False
                continue
            places[entry.key] = entry.pos
            checked = self.value(entry.value, depth)
            if checked is None:
                ok = False
                continue
            result[entry.key] = checked
        return result if ok else None

    def call(self, call: n.Call, depth: int) -> dict[str, Any] | None:
        if call.name not in FUNCTIONS:
            self.error(
                "E0402",
                f"unknown function {call.name}()",
                call.pos,
                help=did_you_mean(call.name, FUNCTIONS)
                or 'use env("NAME", default) or secret("path")',
            )
            return None
        args = call.args
        if call.name == "env":
            if not 1 <= len(args) <= 2 or not isinstance(args[0], n.Str):
                self.error(
                    "E0402",
                    'env() takes a name and an optional default: env("NAME", default)',
                    call.pos,
                )
                return None
            if not _ENV_NAME.fullmatch(args[0].value):
                self.error(
                    "E0402", f'"{args[0].value}" is not an environment variable name', args[0].pos
                )
                return None
            default = None
            if len(args) == 2:
                if isinstance(args[1], n.Call | n.List | n.Map):
                    self.error("E0402", "the default of env() must be a plain value", args[1].pos)
                    return None
                default = self.value(args[1], depth + 1)
                if default is None:
                    return None
            return {"$env": args[0].value, "default": default}
        if len(args) != 1 or not isinstance(args[0], n.Str) or not args[0].value:
            self.error("E0402", 'secret() takes one non-empty path: secret("path")', call.pos)
            return None
        return {"$secret": args[0].value}

    # -- event filters -------------------------------------------------------------
    def expr(self, expr: n.Expr, depth: int) -> dict[str, Any] | None:
        if depth > MAX_NESTING:
            self.error("E0006", f"filter nests deeper than {MAX_NESTING} levels", expr.pos)
            return None
        match expr:
            case n.BoolOp(_, op, left, right):
                a, b = self.expr(left, depth + 1), self.expr(right, depth + 1)
                return None if a is None or b is None else {op: [a, b]}
            case n.Not(_, operand):
                inner = self.expr(operand, depth + 1)
                return None if inner is None else {"not": inner}
            case n.Compare(_, path, op, operand):
                return self.compare(path, op, operand)
        raise AssertionError(expr)  # pragma: no cover

    def compare(
        self, path: n.Path, op: str | None, operand: n.Value | None
    ) -> dict[str, Any] | None:
        root = path.parts[0]
        if root not in FILTER_ROOTS:
            self.error(
                "E0404",
                f'a filter path starts with topic, payload or headers, not "{root}"',
                path.pos,
                help=did_you_mean(root, FILTER_ROOTS),
            )
            return None
        if root == "topic" and len(path.parts) > 1:
            self.error("E0404", "topic is a string and has no fields", path.pos)
            return None
        if op is None or operand is None:
            return {"exists": list(path.parts)}
        if isinstance(operand, n.Call):
            self.error(
                "E0404", "filters compare with literal values, not env() or secret()", operand.pos
            )
            return None
        value = self.value(operand, 1)
        if value is None:
            return None
        if op in ("in", "not in") and not isinstance(value, list):
            self.error(
                "E0404",
                f"`{op}` needs a list on its right",
                operand.pos,
                help='write `payload.region in ["eu", "us"]`',
            )
            return None
        return {"op": op, "path": list(path.parts), "value": value}
