"""The resolution plan: what oneiricc emits and the runtime runs.

One model, shared by both halves (the compiler depends on this package).
A plan is canonical JSON (see `oneiric._plan.canonical`); its `digest` is the
`sha256:` of the canonical bytes of everything else.  The JSON Schema in
docs/plan.schema.json is generated from these classes.

Config values keep JSON's plain types for strings, integers, booleans, lists
and maps.  Everything else is a one-key tagged object, so a reader never has
to guess a type:

    {"$duration_ms": 30000}   {"$bytes": 67108864}   {"$float": "0.25"}
    {"$env": "NAME", "default": <value or null>}     {"$secret": "path"}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypeAliasType, TypedDict

from oneiric._plan.canonical import MAX_SAFE_INTEGER, digest_of, dumps, dumps_sealed
from oneiric._plan.document import DOMAINS as DOMAINS  # re-exported: the plan's vocabulary
from oneiric._plan.document import FORMAT_VERSION as FORMAT_VERSION
from oneiric._plan.document import KNOWN_MAJOR_VERSIONS as KNOWN_MAJOR_VERSIONS
from oneiric._plan.document import Domain as Domain
from oneiric._plan.document import Rule as Rule

SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER, strict=True)]
Millis = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER, strict=True)]
Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
# "path:line:col", path relative to the project root.
Span = Annotated[str, Field(pattern=r"^[^\s].*:[0-9]+:[0-9]+$")]

# JSON without floats and with integers that every JSON reader keeps exact.
ConfigValue = TypeAliasType(
    "ConfigValue",
    "str | bool | SafeInt | list[ConfigValue] | dict[str, ConfigValue] | None",
)


class _Model(BaseModel):
    # Strict: JSON types must match exactly (no coercion), which is also about
    # twice as fast to validate as pydantic's lax mode.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Source(_Model):
    path: str
    sha256: str


class Implementation(_Model):
    """`module:attr`, or an entry point that the compiler resolved to one."""

    kind: Literal["module", "entrypoint"]
    module: str
    attr: str
    group: str | None = None
    name: str | None = None


class Pin(_Model):
    """What was compiled: the module's file hash and the distribution it came from."""

    module: str
    file: str | None  # path inside its import root, e.g. "oneiric/adapters/memory.py"
    sha256: str | None  # None only for built-in modules without a file
    distribution: str | None = None
    version: str | None = None


class Requirement(_Model):
    domain: Domain
    key: str
    capabilities: list[str] = []
    span: Span


class Health(_Model):
    interval_ms: Millis | None = None
    timeout_ms: Millis | None = None


class Lifecycle(_Model):
    activate_timeout_ms: Millis | None = None
    drain_timeout_ms: Millis | None = None


class Retry(_Model):
    attempts: SafeInt
    backoff_ms: Millis | None = None


class Subscription(_Model):
    """The event-specific part of an `event` component."""

    topic: str
    filter: dict[str, ConfigValue] | None = None
    fanout: Literal["broadcast", "exclusive"] = "broadcast"
    retry: Retry | None = None
    concurrency: SafeInt | None = None


# Candidates and losers are plain dicts (TypedDict), not models: a plan carries
# thousands of them, and dicts validate about a quarter faster than model
# instances, which matters when a runtime verifies a large plan.
_RECORD = ConfigDict(extra="forbid", strict=True)


@with_config(_RECORD)
class Candidate(TypedDict):
    """One provider considered for a key: where it was declared."""

    provider: str
    layer: str
    span: Span


@with_config(_RECORD)
class Loser(TypedDict):
    """A candidate that lost, the rule that eliminated it and why."""

    provider: str
    layer: str
    span: Span
    rule: Rule
    reason: str


class Explanation(_Model):
    rule: Rule
    summary: str
    winner: Candidate
    losers: list[Loser]
    refined_by: list[Candidate] = []
    selection: Span | None = None
    required_capabilities: dict[str, list[str]] = {}  # capability -> consumers


class Component(_Model):
    id: str  # "domain:key"
    domain: Domain
    key: str
    provider: str
    layer: str
    span: Span
    layers: list[str]  # every layer that contributed, first declaration first
    implementation: Implementation | None
    pin: Pin | None
    priority: SafeInt
    provides: list[str]
    requires: list[Requirement]
    config: dict[str, ConfigValue]
    health: Health
    lifecycle: Lifecycle
    retry: Retry | None = None
    concurrency: SafeInt | None = None
    subscription: Subscription | None = None
    explanation: Explanation


class WorkflowNode(_Model):
    name: str
    task: str  # a task key; the winning task provider runs
    depends_on: list[str]
    retry: Retry | None = None
    timeout_ms: Millis | None = None
    span: Span


class Workflow(_Model):
    key: str
    provider: str
    nodes: list[WorkflowNode]
    generations: list[list[str]]  # topological levels; each sorted


class Route(_Model):
    topic: str
    fanout: Literal["broadcast", "exclusive"]
    handlers: list[str]  # event keys, highest priority first


class NotifyWhen(_Model):
    condition: str
    checks: SafeInt | None = None
    within_ms: Millis | None = None


class NotifyRate(_Model):
    count: SafeInt
    per_ms: Millis


class Notification(_Model):
    """A notification route: conditions reported to channels (docs/operations.md)."""

    name: str
    when: list[NotifyWhen]
    channels: list[dict[str, ConfigValue]]
    rate: NotifyRate | None = None
    span: Span


class Plan(_Model):
    format: Literal["oneiric-plan"] = "oneiric-plan"
    version: str = FORMAT_VERSION
    target: str
    profile: str
    # The directories, relative to the project root, the compiler found modules in
    # (oneiric.toml's module-path, then --module-path): the runtime imports from them.
    module_path: list[str] = []
    sources: list[Source]
    components: list[Component]
    activation_order: list[str]
    workflows: list[Workflow]
    routes: list[Route]
    # Absent from the plan's bytes when empty (plans without routes are unchanged).
    notifications: list[Notification] = []
    digest: Digest | None = None

    def body(self) -> dict[str, ConfigValue]:
        """The plan as JSON data, without its digest (what the digest covers)."""
        exclude = {"digest"} if self.notifications else {"digest", "notifications"}
        return self.model_dump(mode="json", exclude=exclude)

    def computed_digest(self) -> str:
        # The model admits no floats and only safe integers: skip the number scan.
        return digest_of(self.body(), numbers_checked=True)

    def sealed(self) -> Plan:
        """This plan with `digest` set to the sha256 of its canonical body."""
        return self.model_copy(update={"digest": self.computed_digest()})

    def to_bytes(self) -> bytes:
        """Canonical bytes of the sealed plan, digest included: the plan file's content."""
        body = self.body()
        if self.digest is None:
            return dumps_sealed(body, numbers_checked=True)[0]
        return dumps({**body, "digest": self.digest}, numbers_checked=True)

    def component(self, component_id: str) -> Component | None:
        return next((c for c in self.components if c.id == component_id), None)


class UnsupportedPlanVersion(ValueError):
    pass


def load_plan(data: bytes, *, authenticated: bool = False) -> Plan:
    """Parse and validate plan bytes; refuse unknown major versions and bad digests.

    Parsing is strict (`oneiric._plan.strictjson`): duplicate keys, huge integers,
    deep nesting and invalid UTF-8 raise `StrictJSONError`, a `ValueError`.
    `authenticated=True` is for bytes a verified manifest pins by sha256:
    `oneiricc sign` ran every check on them (this function, in full) before
    signing, so the whole-document scans (duplicate keys, depth, and the
    plan's own digest, a full re-encoding) are not repeated.  Structure and
    types are still validated.
    """
    from oneiric._plan.gcpause import gc_paused
    from oneiric._plan.strictjson import loads

    with gc_paused():
        if authenticated:
            plan = _validate_authenticated(data)
            if plan is not None:
                return plan
        raw = loads(data)
        version = raw.get("version") if isinstance(raw, dict) else None
        major = version.split(".", 1)[0] if isinstance(version, str) else ""
        if not major.isdigit() or int(major) not in KNOWN_MAJOR_VERSIONS:
            known = ", ".join(f"{v}.x" for v in KNOWN_MAJOR_VERSIONS)
            raise UnsupportedPlanVersion(
                f"plan format version {version!r} is not supported; this runtime knows {known}"
            )
        plan = Plan.model_validate(raw)
        # Validation admitted exactly the model's fields, no floats and only safe
        # integers: the document as read, less its digest, is what the digest covers.
        body = {key: value for key, value in raw.items() if key != "digest"}
        expected = digest_of(body, numbers_checked=True)
    if plan.digest != expected:
        raise ValueError(f"plan digest mismatch: plan says {plan.digest}, content is {expected}")
    return plan


def _validate_authenticated(data: bytes) -> Plan | None:
    """One-pass parse and validation (pydantic's own JSON reader) for pinned bytes.

    None when the bytes do not validate: the strict path then says precisely
    why (a format version this runtime does not know, a bad field, ...).
    """
    from pydantic import ValidationError

    try:
        plan = Plan.model_validate_json(data)
    except ValidationError:
        return None
    major = plan.version.split(".", 1)[0]
    if not major.isdigit() or int(major) not in KNOWN_MAJOR_VERSIONS:
        return None
    return plan
