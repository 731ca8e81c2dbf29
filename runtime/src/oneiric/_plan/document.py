"""The plan's vocabulary and shape without pydantic: plain JSON data, typed.

`oneiric._plan.model` holds the contract: the pydantic models, which validate a plan.
This module describes the same document as `TypedDict`s, so the compiler can
build a plan as plain dicts and encode it without importing pydantic (about
a fifth of a second of every `oneiricc build` start).  A test compares the
JSON Schemas of the two descriptions, so they cannot drift apart, and every
plan the compiler emits is validated with `oneiric._plan.model.load_plan` in tests.

Every key is always present (model defaults are written out as `None`, `[]`
or `{}`), exactly as `Plan.model_dump(mode="json")` writes it.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypeAlias

from typing_extensions import TypeAliasType, TypedDict

FORMAT_VERSION = "1.0"
KNOWN_MAJOR_VERSIONS = (1,)

DOMAINS = ("adapter", "service", "task", "event", "workflow", "action")
Domain: TypeAlias = Literal["adapter", "service", "task", "event", "workflow", "action"]
Rule: TypeAlias = Literal["only", "selection", "capability", "priority", "layer", "declaration"]
Fanout: TypeAlias = Literal["broadcast", "exclusive"]

# JSON without floats; integers stay within ±(2**53 - 1) (the models enforce it).
ConfigValue = TypeAliasType(
    "ConfigValue",
    "str | bool | int | list[ConfigValue] | dict[str, ConfigValue] | None",
)


class Source(TypedDict):
    path: str
    sha256: str


class Implementation(TypedDict):
    kind: Literal["module", "entrypoint"]
    module: str
    attr: str
    group: str | None
    name: str | None


class Pin(TypedDict):
    module: str
    file: str | None
    sha256: str | None
    distribution: str | None
    version: str | None


class Requirement(TypedDict):
    domain: Domain
    key: str
    capabilities: list[str]
    span: str


class Health(TypedDict):
    interval_ms: int | None
    timeout_ms: int | None


class Lifecycle(TypedDict):
    activate_timeout_ms: int | None
    drain_timeout_ms: int | None


class Retry(TypedDict):
    attempts: int
    backoff_ms: int | None


class Subscription(TypedDict):
    topic: str
    filter: dict[str, ConfigValue] | None
    fanout: Fanout
    retry: Retry | None
    concurrency: int | None


class Candidate(TypedDict):
    provider: str
    layer: str
    span: str


class Loser(TypedDict):
    provider: str
    layer: str
    span: str
    rule: Rule
    reason: str


class Explanation(TypedDict):
    rule: Rule
    summary: str
    winner: Candidate
    losers: list[Loser]
    refined_by: list[Candidate]
    selection: str | None
    required_capabilities: dict[str, list[str]]


class Component(TypedDict):
    id: str
    domain: Domain
    key: str
    provider: str
    layer: str
    span: str
    layers: list[str]
    implementation: Implementation | None
    pin: Pin | None
    priority: int
    provides: list[str]
    requires: list[Requirement]
    config: dict[str, ConfigValue]
    health: Health
    lifecycle: Lifecycle
    retry: Retry | None
    concurrency: int | None
    subscription: Subscription | None
    explanation: Explanation


class WorkflowNode(TypedDict):
    name: str
    task: str
    depends_on: list[str]
    retry: Retry | None
    timeout_ms: int | None
    span: str


class Workflow(TypedDict):
    key: str
    provider: str
    nodes: list[WorkflowNode]
    generations: list[list[str]]


class Route(TypedDict):
    topic: str
    fanout: Fanout
    handlers: list[str]


# Notification routes (`notify` in a stack): what a runtime reports, and where.
NOTIFY_CONDITIONS = (
    "plan_rejected",
    "swap_aborted",
    "rolled_back",
    "component_unhealthy",
    "manifest_expiring",
    "dead_letter",
    "workflow_failed",
)
# Each channel kind and the fields it needs.
NOTIFY_CHANNELS: dict[str, tuple[str, ...]] = {
    "webhook": ("url",),
    "slack": ("url",),
    "teams": ("url",),
    "discord": ("url",),
    "email": ("host", "from", "to"),
}


class NotifyWhen(TypedDict):
    condition: str
    checks: int | None  # component_unhealthy: failed checks in a row (default 1)
    within_ms: int | None  # manifest_expiring: how long before the expiry


class NotifyRate(TypedDict):
    count: int
    per_ms: int


class Notification(TypedDict):
    name: str
    when: list[NotifyWhen]
    channels: list[dict[str, ConfigValue]]  # {"kind": ..., and the channel's fields}
    rate: NotifyRate | None
    span: str


class Plan(TypedDict):
    format: Literal["oneiric-plan"]
    version: str
    target: str
    profile: str
    module_path: list[str]
    sources: list[Source]
    components: list[Component]
    activation_order: list[str]
    workflows: list[Workflow]
    routes: list[Route]
    notifications: NotRequired[list[Notification]]  # absent when empty
    digest: str
