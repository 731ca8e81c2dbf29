"""The syntax tree of one `.oneiric` file, as the parser produces it.

Nodes are plain frozen dataclasses: cheap to build, picklable for the parse
cache, and free of meaning.  Whether a field is allowed in a domain, whether a
duration is well formed, what a name refers to: the checker decides that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeAlias


class Pos(NamedTuple):
    """A place in a source file: 1-based line and column, and the width to underline.

    A named tuple rather than a dataclass: every token makes one, and tuples
    are several times cheaper to create and to unpickle from the parse cache.
    """

    line: int
    col: int
    width: int = 1


# ------------------------------------------------------------------ values --


@dataclass(frozen=True, slots=True)
class Str:
    pos: Pos
    value: str


@dataclass(frozen=True, slots=True)
class Int:
    pos: Pos
    value: int


@dataclass(frozen=True, slots=True)
class Float:
    pos: Pos
    text: str


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number with a unit (`30s`, `64MiB`); the checker decides what it measures."""

    pos: Pos
    text: str


@dataclass(frozen=True, slots=True)
class Bool:
    pos: Pos
    value: bool


@dataclass(frozen=True, slots=True)
class List:
    pos: Pos
    items: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Entry:
    pos: Pos
    key: str
    value: Value


@dataclass(frozen=True, slots=True)
class Map:
    pos: Pos
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """`env("NAME", default)` or `secret("path")`: a reference left unresolved in the plan."""

    pos: Pos
    name: str
    args: tuple[Value, ...]


Value: TypeAlias = Str | Int | Float | Quantity | Bool | List | Map | Call

# ---------------------------------------------------------- event filters --


@dataclass(frozen=True, slots=True)
class Path:
    pos: Pos
    parts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    """`path OP value`; `op` is None for a bare path, which tests that it exists."""

    pos: Pos
    path: Path
    op: str | None
    value: Value | None


@dataclass(frozen=True, slots=True)
class Not:
    pos: Pos
    operand: Expr


@dataclass(frozen=True, slots=True)
class BoolOp:
    pos: Pos
    op: str  # "and" | "or"
    left: Expr
    right: Expr


Expr: TypeAlias = Compare | Not | BoolOp

# ------------------------------------------------------- component fields --


@dataclass(frozen=True, slots=True)
class ImplRef:
    pos: Pos
    target: str  # "module:attr", validated by the checker
    target_pos: Pos


@dataclass(frozen=True, slots=True)
class ImplEntryPoint:
    pos: Pos
    group: str
    name: str


@dataclass(frozen=True, slots=True)
class Priority:
    pos: Pos
    value: int


@dataclass(frozen=True, slots=True)
class Provides:
    pos: Pos
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Requires:
    pos: Pos
    domain: str
    domain_pos: Pos
    key: str
    key_pos: Pos
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Config:
    pos: Pos
    values: Map


@dataclass(frozen=True, slots=True)
class Health:
    pos: Pos
    every: Quantity | None
    timeout: Quantity | None


@dataclass(frozen=True, slots=True)
class Timeout:
    """`activate timeout 5s` or `drain timeout 30s`."""

    pos: Pos
    phase: str
    value: Quantity


@dataclass(frozen=True, slots=True)
class OnTopic:
    pos: Pos
    topic: str


@dataclass(frozen=True, slots=True)
class Where:
    pos: Pos
    expr: Expr


@dataclass(frozen=True, slots=True)
class Fanout:
    pos: Pos
    mode: str
    mode_pos: Pos


@dataclass(frozen=True, slots=True)
class Retry:
    pos: Pos
    attempts: int
    backoff: Quantity | None


@dataclass(frozen=True, slots=True)
class Concurrency:
    pos: Pos
    limit: int


@dataclass(frozen=True, slots=True)
class NodeTask:
    pos: Pos
    task: str


@dataclass(frozen=True, slots=True)
class NodeTimeout:
    pos: Pos
    value: Quantity


NodeField: TypeAlias = NodeTask | Retry | NodeTimeout


@dataclass(frozen=True, slots=True)
class Node:
    pos: Pos
    name: str
    fields: tuple[NodeField, ...]


@dataclass(frozen=True, slots=True)
class Edges:
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


@dataclass(frozen=True, slots=True)
class Component:
    pos: Pos
    domain: str
    domain_pos: Pos
    key: str
    provider: str
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Selection:
    pos: Pos
    domain: str
    domain_pos: Pos
    key: str
    key_pos: Pos
    provider: str
    provider_pos: Pos


@dataclass(frozen=True, slots=True)
class Stack:
    pos: Pos
    name: str
    components: tuple[Component, ...]
    selections: tuple[Selection, ...]


@dataclass(frozen=True, slots=True)
class Target:
    pos: Pos
    name: str
    layers: tuple[tuple[str, Pos], ...]
    profile: tuple[str, Pos] | None


@dataclass(frozen=True, slots=True)
class Import:
    pos: Pos
    path: str


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed file; `path` is relative to the project root, with `/` separators."""

    path: str
    version: int
    version_pos: Pos
    imports: tuple[Import, ...]
    stacks: tuple[Stack, ...]
    targets: tuple[Target, ...]
