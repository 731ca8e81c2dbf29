"""Signed manifests: the payload model and the verification pipeline (DESIGN §5).

The payload of a manifest envelope (payloadType `MANIFEST_PAYLOAD_TYPE`):

    {"format": "oneiric-manifest", "version": 1, "target": "prod", "serial": 7,
     "expires": "2030-01-01T00:00:00Z",
     "plan": {"digest": "sha256:<hex>", "size": 19214, "url": "prod.plan.json"}}

`plan` carries either `url` (resolved against the manifest's location) or
`data` (the plan file's bytes in base64).  Either way `digest` and `size` pin
the plan file's exact bytes.

Verification order, each step on bytes the previous step vouched for:
size cap → strict envelope JSON → payloadType → every signature by a trusted
key and valid → distinct signers ≥ threshold → strict payload JSON and schema
(unknown fields rejected) → target → serial against the last accepted one
(rollback, reuse) → expiry against one clock reading, and not further ahead
than the trust file's max validity → plan size cap → plan
bytes obtained under a cap of the pinned size → size → sha256 → only then the
plan is parsed and validated, and its target compared.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from oneiric._delivery import dsse
from oneiric._delivery.checks import Check, Rejected, TransferError
from oneiric._delivery.fetch import Fetcher, resolve
from oneiric._delivery.limits import DEFAULT_MAX_MANIFEST_BYTES, DEFAULT_MAX_PLAN_BYTES
from oneiric._delivery.store import TARGET_PATTERN, State
from oneiric._delivery.trust import Trust
from oneiric._plan import strictjson
from oneiric._plan.canonical import MAX_SAFE_INTEGER, dumps
from oneiric._plan.model import Plan, load_plan

MANIFEST_PAYLOAD_TYPE = "application/vnd.oneiric.manifest+json"
MANIFEST_FORMAT = "oneiric-manifest"
MANIFEST_VERSION = 1
EXPIRES_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"


def format_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PlanRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
    url: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    data: str | None = None  # base64 of the plan file's bytes

    @model_validator(mode="after")
    def _one_location(self) -> PlanRef:
        if (self.url is None) == (self.data is None):
            raise ValueError("plan needs exactly one of url and data")
        return self


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: Literal["oneiric-manifest"]
    version: Literal[1]
    target: Annotated[str, Field(pattern=TARGET_PATTERN)]
    serial: Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
    expires: Annotated[str, Field(pattern=EXPIRES_PATTERN)]
    plan: PlanRef

    @field_validator("expires")
    @classmethod
    def _real_date(cls, value: str) -> str:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")  # rejects 2030-02-30 and the like
        return value

    @property
    def expires_at(self) -> datetime:
        return datetime.strptime(self.expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def manifest_payload(
    target: str, serial: int, expires: datetime, plan: bytes, plan_url: str | None
) -> bytes:
    """Canonical payload bytes for a plan file (what `oneiricc sign` signs)."""
    reference: dict[str, object] = {
        "digest": "sha256:" + hashlib.sha256(plan).hexdigest(),
        "size": len(plan),
    }
    if plan_url is None:
        reference["data"] = base64.b64encode(plan).decode("ascii")
    else:
        reference["url"] = plan_url
    payload = dumps(
        {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "target": target,
            "serial": serial,
            "expires": format_utc(expires),
            "plan": reference,
        }
    )
    parse_payload(payload)
    return payload


def parse_payload(payload: bytes) -> Manifest:
    try:
        raw = strictjson.loads(payload)
    except strictjson.StrictJSONError as exc:
        raise Rejected(Check.JSON, f"payload: {exc}") from None
    if (
        isinstance(raw, dict)
        and raw.get("format") == MANIFEST_FORMAT
        and raw.get("version") != MANIFEST_VERSION
    ):
        raise Rejected(
            Check.VERSION,
            f"manifest format version {raw.get('version')!r} is not "
            f"supported; this runtime knows {MANIFEST_VERSION}",
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "payload"
        raise Rejected(Check.PAYLOAD, f"{where}: {error['msg']}") from None


def stored_manifest(state: State, target: str) -> tuple[Manifest, bytes] | None:
    """The last accepted manifest for `target` and its payload bytes, if any.

    The state directory is written only after full verification, so signatures
    are not re-checked here (the keys may have rotated since).  A stored
    manifest that cannot be read fails closed (`TransferError`, check
    "state") instead of silently resetting rollback protection.
    """
    try:
        stored = state.manifest(target)
    except OSError as exc:
        raise TransferError(Check.STATE, str(exc)) from None
    if stored is None:
        return None
    try:
        envelope = dsse.parse_envelope(stored)
        return parse_payload(envelope.payload), envelope.payload
    except Rejected as exc:
        raise TransferError(
            Check.STATE,
            f"stored manifest for {target} is unreadable "
            f"({exc}); refusing to guess the last serial",
        ) from None


@dataclass(frozen=True)
class Verified:
    """A manifest whose envelope, signatures and payload passed every check."""

    envelope: bytes
    payload: bytes
    manifest: Manifest
    signers: frozenset[str]
    unchanged: bool  # the same payload as the last accepted one


def verify_manifest(
    data: bytes,
    trust: Trust,
    *,
    now: datetime,
    target: str | None = None,
    state: State | None = None,
    max_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
) -> Verified:
    """Every manifest-level check of DESIGN §5; the plan is checked by `check_plan`.

    With `state`, the serial is checked against the last manifest accepted
    there for the same target (nothing is written).
    """
    if len(data) > max_bytes:
        raise Rejected(Check.SIZE, f"manifest is {len(data)} bytes, the cap is {max_bytes}")
    envelope = dsse.parse_envelope(data)
    signers = dsse.verify(envelope, MANIFEST_PAYLOAD_TYPE, trust.verifiers)
    dsse.require_threshold(signers, trust.threshold)
    manifest = parse_payload(envelope.payload)
    if target is not None and manifest.target != target:
        raise Rejected(
            Check.TARGET, f"manifest is for target {manifest.target!r}, expected {target!r}"
        )
    unchanged = False
    previous = stored_manifest(state, manifest.target) if state is not None else None
    if previous is not None:
        last, last_payload = previous
        if manifest.serial < last.serial:
            raise Rejected(
                Check.ROLLBACK,
                f"serial {manifest.serial} is lower than the last "
                f"accepted serial {last.serial} for target {manifest.target}",
            )
        if manifest.serial == last.serial:
            if envelope.payload != last_payload:
                raise Rejected(
                    Check.SERIAL_REUSE,
                    f"serial {manifest.serial} was already "
                    f"accepted for target {manifest.target} with other content",
                )
            unchanged = True
    if manifest.expires_at <= now:
        raise Rejected(
            Check.EXPIRED, f"manifest expired at {manifest.expires} (now {format_utc(now)})"
        )
    check_validity(manifest.expires_at, now, trust.max_validity_s)
    return Verified(data, envelope.payload, manifest, signers, unchanged)


def check_validity(expires: datetime, now: datetime, max_validity_s: int) -> None:
    """Refuse an `expires` further ahead of `now` than the trust policy allows (`validity`)."""
    if expires - now > timedelta(seconds=max_validity_s):
        raise Rejected(
            Check.VALIDITY,
            f"manifest expires at {format_utc(expires)}, more than the trust file's "
            f"max_validity_seconds ({max_validity_s} s, {_days(max_validity_s)}) after now "
            f"({format_utc(now)})",
        )


def _days(seconds: int) -> str:
    return f"{seconds / 86400:g} days"


def check_plan(manifest: Manifest, data: bytes, *, previous: Accepted | None = None) -> Plan:
    """Check plan bytes against the manifest's pin, then (only then) parse them.

    `previous`: an earlier acceptance; when these are its plan bytes exactly,
    its plan is returned instead of parsing them again (a plan is a function of
    its bytes).  The pin and target checks run all the same.
    """
    pin = manifest.plan
    if len(data) != pin.size:
        raise Rejected(Check.PLAN_SIZE, f"plan is {len(data)} bytes, the manifest pins {pin.size}")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != pin.digest:
        raise Rejected(
            Check.PLAN_DIGEST, f"plan bytes hash to {actual}, the manifest pins {pin.digest}"
        )
    if previous is not None and previous.plan_bytes == data:
        plan = previous.plan
    else:
        try:
            # The signature covers these exact bytes, and `oneiricc sign` ran the
            # whole-document checks on them before signing (see load_plan).
            plan = load_plan(data, authenticated=True)
        except ValueError as exc:
            raise Rejected(Check.PLAN, str(exc).splitlines()[0]) from None
    if plan.target != manifest.target:
        raise Rejected(
            Check.TARGET,
            f"plan is for target {plan.target!r}, the manifest for {manifest.target!r}",
        )
    return plan


def plan_bytes(
    manifest: Manifest,
    source: str,
    fetcher: Fetcher,
    *,
    max_plan_bytes: int,
    state: State | None = None,
) -> bytes:
    """The plan file's bytes: inline, already in `state`, or fetched under a cap."""
    pin = manifest.plan
    if pin.size > max_plan_bytes:
        raise Rejected(Check.SIZE, f"plan is {pin.size} bytes, the cap is {max_plan_bytes}")
    if pin.data is not None:
        return dsse.b64decode(pin.data, "plan.data")
    hexdigest = pin.digest.removeprefix("sha256:")
    if state is not None:
        with contextlib.suppress(OSError):
            data = state.plan(manifest.target, hexdigest)
            if data is not None and hashlib.sha256(data).hexdigest() == hexdigest:
                return data  # a damaged copy is ignored, not fatal: fetch it again
    assert pin.url is not None
    url = resolve(source, pin.url)
    try:
        return fetcher.fetch(url, "plan", max_bytes=pin.size).data
    except Rejected as exc:
        if exc.check is Check.SIZE:
            raise Rejected(
                Check.PLAN_SIZE,
                f"plan {url} is longer than the {pin.size} bytes "
                "the manifest pins (transfer abandoned)",
            ) from None
        raise


@dataclass(frozen=True)
class Accepted:
    verified: Verified
    plan_bytes: bytes
    plan: Plan

    @property
    def manifest(self) -> Manifest:
        return self.verified.manifest


def verify_all(
    data: bytes,
    source: str,
    trust: Trust,
    fetcher: Fetcher,
    *,
    now: datetime,
    target: str | None = None,
    state: State | None = None,
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
    max_plan_bytes: int = DEFAULT_MAX_PLAN_BYTES,
    previous: Accepted | None = None,
) -> Accepted:
    """Manifest and plan, fully checked; nothing is persisted here.

    `previous` lets an unchanged plan skip re-parsing (see `check_plan`).
    """
    verified = verify_manifest(
        data, trust, now=now, target=target, state=state, max_bytes=max_manifest_bytes
    )
    plan_data = plan_bytes(
        verified.manifest, source, fetcher, max_plan_bytes=max_plan_bytes, state=state
    )
    plan = check_plan(verified.manifest, plan_data, previous=previous)
    return Accepted(verified, plan_data, plan)


def utc_now() -> datetime:
    """The one clock reading a verification uses."""
    return datetime.now(UTC)


_DURATION = re.compile(r"^([0-9]{1,9})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int | None:
    """Seconds of `30d`, `12h`, `90m`, `3600s`, `2w`; None when `text` is not one."""
    match = _DURATION.match(text)
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else None


def parse_expiry(text: str, now: datetime) -> datetime:
    """`30d`, `12h`, `90m`, `3600s`, `2w`, or an ISO 8601 timestamp with a UTC offset."""
    seconds = parse_duration(text)
    if seconds is not None:
        return now + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected a duration such as 30d or 12h, or a UTC timestamp such as "
            f"2030-01-01T00:00:00Z, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone; add Z for UTC")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class Synced:
    """One successful sync: `accepted` is None when the server answered 304."""

    status: Literal["accepted", "unchanged"]
    accepted: Accepted | None
    etag: str | None


def sync(
    source: str,
    trust: Trust,
    state: State,
    fetcher: Fetcher,
    *,
    target: str | None = None,
    etag: str | None = None,
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
    max_plan_bytes: int = DEFAULT_MAX_PLAN_BYTES,
) -> Synced:
    """Fetch, verify and persist as last-known-good; raise `SecurityError` on any failure.

    The state lock is held from before the fetch to after the commit, so two
    syncs cannot interleave their rollback checks and writes.  On failure the
    state directory is exactly as it was.
    """
    try:
        with state.locked():
            fetched = fetcher.fetch(source, "manifest", max_bytes=max_manifest_bytes, etag=etag)
            if fetched.not_modified:
                return Synced("unchanged", None, etag)
            accepted = verify_all(
                fetched.data,
                source,
                trust,
                fetcher,
                now=utc_now(),
                target=target,
                state=state,
                max_manifest_bytes=max_manifest_bytes,
                max_plan_bytes=max_plan_bytes,
            )
            if accepted.verified.unchanged:
                return Synced("unchanged", accepted, fetched.etag)
            manifest = accepted.manifest
            state.commit(
                manifest.target,
                fetched.data,
                manifest.plan.digest.removeprefix("sha256:"),
                accepted.plan_bytes,
            )
            return Synced("accepted", accepted, fetched.etag)
    except OSError as exc:  # the state directory: lock, target name, commit
        raise TransferError(Check.STATE, f"state directory {state.root}: {exc}") from None
