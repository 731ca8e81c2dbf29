"""The syntax tree of one `.oneiric` file, as the parser produces it.

Nodes are named tuples: the cheapest immutable records Python has to build
(the parser makes about ten per component), to pickle for the parse cache and
to send back from forked parse children.  They carry no meaning: whether a
field is allowed in a domain, whether a duration is well formed, what a name
refers to, the checker decides.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias


class Pos(NamedTuple):
    """A place in a source file: 1-based line and column, and the width to underline."""

    line: int
    col: int
    width: int = 1


# ------------------------------------------------------------------ values --


class Str(NamedTuple):
    pos: Pos
    value: str


class Int(NamedTuple):
    pos: Pos
    value: int


class Float(NamedTuple):
    pos: Pos
    text: str


class Quantity(NamedTuple):
    """A number with a unit (`30s`, `64MiB`); the checker decides what it measures."""

    pos: Pos
    text: str


class Bool(NamedTuple):
    pos: Pos
    value: bool


class List(NamedTuple):
    pos: Pos
    items: tuple[Value, ...]


class Entry(NamedTuple):
    pos: Pos
    key: str
    value: Value


class Map(NamedTuple):
    pos: Pos
    entries: tuple[Entry, ...]


class Call(NamedTuple):
    """`env("NAME", default)` or `secret("path")`: a reference left unresolved in the plan."""

    pos: Pos
    name: str
    args: tuple[Value, ...]


Value: TypeAlias = Str | Int | Float | Quantity | Bool | List | Map | Call

# ---------------------------------------------------------- event filters --


class Path(NamedTuple):
    pos: Pos
    parts: tuple[str, ...]


class Compare(NamedTuple):
    """`path OP value`; `op` is None for a bare path, which tests that it exists."""

    pos: Pos
    path: Path
    op: str | None
    value: Value | None


class Not(NamedTuple):
    pos: Pos
    operand: Expr


class BoolOp(NamedTuple):
    pos: Pos
    op: str  # "and" | "or"
    left: Expr
    right: Expr


Expr: TypeAlias = Compare | Not | BoolOp

# ------------------------------------------------------- component fields --


class ImplRef(NamedTuple):
    pos: Pos
    target: str  # "module:attr", validated by the checker
    target_pos: Pos


class ImplEntryPoint(NamedTuple):
    pos: Pos
    group: str
    name: str


class Priority(NamedTuple):
    pos: Pos
    value: int


class Provides(NamedTuple):
    pos: Pos
    capabilities: tuple[str, ...]


class Requires(NamedTuple):
    pos: Pos
    domain: str
    domain_pos: Pos
    key: str
    key_pos: Pos
    capabilities: tuple[str, ...]


class Config(NamedTuple):
    pos: Pos
    values: Map


class Health(NamedTuple):
    pos: Pos
    every: Quantity | None
    timeout: Quantity | None


class Timeout(NamedTuple):
    """`activate timeout 5s` or `drain timeout 30s`."""

    pos: Pos
    phase: str
    value: Quantity


class OnTopic(NamedTuple):
    pos: Pos
    topic: str


class Where(NamedTuple):
    pos: Pos
    expr: Expr


class Fanout(NamedTuple):
    pos: Pos
    mode: str
    mode_pos: Pos


class Retry(NamedTuple):
    pos: Pos
    attempts: int
    backoff: Quantity | None


class Concurrency(NamedTuple):
    pos: Pos
    limit: int


class NodeTask(NamedTuple):
    pos: Pos
    task: str


class NodeTimeout(NamedTuple):
    pos: Pos
    value: Quantity


NodeField: TypeAlias = NodeTask | Retry | NodeTimeout


class Node(NamedTuple):
    pos: Pos
    name: str
    fields: tuple[NodeField, ...]


class Edges(NamedTuple):
    """A chain `a -> b -> c`; names with their positions."""

    pos: Pos
    names: tuple[tuple[str, Pos], ...]


Field: TypeAlias = (
    ImplRef
    | ImplEntryPoint
    | Priority
    | Provides
    | Requires
    | Config
    | Health
    | Timeout
    | OnTopic
    | Where
    | Fanout
    | Retry
    | Concurrency
    | Node
    | Edges
)

# ------------------------------------------------------------ declarations --


class Component(NamedTuple):
    pos: Pos
    domain: str
    domain_pos: Pos
    key: str
    provider: str
    fields: tuple[Field, ...]


class Selection(NamedTuple):
    pos: Pos
    domain: str
    domain_pos: Pos
    key: str
    key_pos: Pos
    provider: str
    provider_pos: Pos


class Capability(NamedTuple):
    """`capability DOMAIN KEY NAME = "module:Protocol"`: providing NAME promises the protocol."""

    pos: Pos
    domain: str
    domain_pos: Pos
    key: str
    key_pos: Pos
    name: str
    name_pos: Pos
    protocol: str
    protocol_pos: Pos


class Plugins(NamedTuple):
    """`plugins "group"`: the installed entry points of `group` become candidates."""

    pos: Pos
    group: str
    group_pos: Pos


class NotifyCondition(NamedTuple):
    """`component_unhealthy 3`, `manifest_expiring 7d`, `dead_letter`."""

    pos: Pos
    name: str
    arg: Int | Quantity | None


class NotifyWhen(NamedTuple):
    pos: Pos
    conditions: tuple[NotifyCondition, ...]


class NotifySend(NamedTuple):
    pos: Pos
    kind: str
    kind_pos: Pos
    values: Map


class NotifyRate(NamedTuple):
    pos: Pos
    limit: Int  # messages
    per: Quantity


class Notify(NamedTuple):
    """`notify NAME { when ...; send KIND { ... }; rate N per DURATION }`."""

    pos: Pos
    name: str
    fields: tuple[NotifyWhen | NotifySend | NotifyRate, ...]


class Stack(NamedTuple):
    pos: Pos
    name: str
    components: tuple[Component, ...]
    selections: tuple[Selection, ...]
    capabilities: tuple[Capability, ...] = ()
    plugins: tuple[Plugins, ...] = ()
    notifications: tuple[Notify, ...] = ()


class Target(NamedTuple):
    pos: Pos
    name: str
    layers: tuple[tuple[str, Pos], ...]
    profile: tuple[str, Pos] | None


class Import(NamedTuple):
    pos: Pos
    path: str


class Module(NamedTuple):
    """One parsed file; `path` is relative to the project root, with `/` separators."""

    path: str
    version: int
    version_pos: Pos
    imports: tuple[Import, ...]
    stacks: tuple[Stack, ...]
    targets: tuple[Target, ...]
