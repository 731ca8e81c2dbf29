"""Where `oneiric run` gets plans: a signed manifest (file or URL), or an unsigned plan file.

`fetch()` returns a `Candidate` (a validated plan and its serial), None when
an HTTP source answered 304 Not Modified, or raises:

* `SourceUnavailable`: the bytes could not be obtained (missing file,
  unreachable server, timeout); the runtime keeps its last known good plan.
* `PlanInvalid`: the bytes were examined and refused (signature, rollback,
  expiry, truncated or invalid plan); nothing changes, the refusal is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from oneiric import _trace
from oneiric._plan.model import Plan, load_plan

if TYPE_CHECKING:  # manifests (and PyNaCl) are imported only when a manifest is the source
    from oneiric._delivery.manifest import Accepted

MAX_UNSIGNED_PLAN_BYTES = 64 * 1024 * 1024
VERIFY = "oneiric.verify"


class SourceUnavailable(Exception):
    pass


class PlanInvalid(Exception):
    pass


@dataclass(frozen=True)
class Candidate:
    plan: Plan
    serial: int | None
    data: bytes | None = None  # the plan's bytes as received (valid JSON), when at hand
    expires_at: float | None = None  # a signed manifest's expiry (Unix time)


class Source:
    """Base class: `description` for logs and status, `path` when a file can be watched."""

    description: str
    path: Path | None = None

    async def fetch(self) -> Candidate | None:
        raise NotImplementedError


def parse_plan(data: bytes, where: str) -> Plan:
    """Validate plan bytes; any failure is a `PlanInvalid` naming `where`."""
    try:
        return load_plan(data)
    except (ValueError, TypeError) as exc:
        # pydantic's ValidationError and json's JSONDecodeError are ValueErrors.
        first = str(exc).splitlines()
        raise PlanInvalid(f"{where}: not a valid plan: {' '.join(first[:3])}") from None


class UnsignedPlanFile(Source):
    """A local plan file taken without a signature (`--unsigned-plan`, development only)."""

    def __init__(self, path: Path, target: str | None = None) -> None:
        self.path = path
        self.target = target
        self.description = f"unsigned plan file {path}"
        self._last: Candidate | None = None

    async def fetch(self) -> Candidate:
        path = self.path
        assert path is not None
        try:
            data = await anyio.Path(path).read_bytes()
        except OSError as exc:
            raise SourceUnavailable(f"{path}: {exc.strerror}") from None
        if len(data) > MAX_UNSIGNED_PLAN_BYTES:
            raise PlanInvalid(f"{path}: larger than {MAX_UNSIGNED_PLAN_BYTES} bytes")
        if self._last is not None and self._last.data == data:
            return self._last  # the same bytes are the same plan: no second parse
        plan = parse_plan(data, str(path))
        if self.target is not None and plan.target != self.target:
            raise PlanInvalid(
                f"{path}: plan is for target {plan.target!r}, expected {self.target!r}"
            )
        self._last = Candidate(plan, None, data)
        return self._last


class ManifestSource(Source):
    """A signed manifest (file or URL) verified against a trust file (DESIGN §5).

    Verification and persistence are `oneiric._delivery.manifest` and `oneiric._delivery.store`
    (the same code as `oneiric verify` and `remote-sync`): an accepted
    manifest is committed to STATE/manifests before its plan is offered to
    the runtime, so serials only move forward across restarts.  `target`
    (`--target`) pins the target: a manifest for another one is refused before
    anything is stored.  Without it (`--any-target`) the first accepted
    manifest fixes the target for the life of the process.
    HTTP sources are polled with If-None-Match; a 304 is "no change".
    """

    def __init__(
        self, location: str, trust_file: Path, state_dir: Path, target: str | None = None
    ) -> None:
        from oneiric._delivery.fetch import Fetcher, is_http
        from oneiric._delivery.store import State
        from oneiric._delivery.trust import load_trust

        self.location = location
        self.trust = load_trust(trust_file)
        self.state = State(state_dir)
        self.fetcher = Fetcher()
        self.path = None if is_http(location) else Path(location)
        self.description = f"manifest {location}"
        self.target = target
        self._etag: str | None = None
        self._accepted: Accepted | None = None  # the last one: its plan is not parsed again

    async def fetch(self) -> Candidate | None:
        return await anyio.to_thread.run_sync(self._fetch)

    def _fetch(self) -> Candidate | None:
        from oneiric._delivery.checks import Rejected, TransferError
        from oneiric._delivery.limits import DEFAULT_MAX_MANIFEST_BYTES
        from oneiric._delivery.manifest import utc_now, verify_all

        started = _trace.start()  # the span covers fetching and verifying
        try:
            fetched = self.fetcher.fetch(
                self.location, "manifest", max_bytes=DEFAULT_MAX_MANIFEST_BYTES, etag=self._etag
            )
            if fetched.not_modified:
                return None
            with self.state.locked():
                accepted = verify_all(
                    fetched.data,
                    self.location,
                    self.trust,
                    self.fetcher,
                    now=utc_now(),
                    target=self.target,
                    state=self.state,
                    previous=self._accepted,
                )
                if not accepted.verified.unchanged:
                    digest = accepted.manifest.plan.digest.removeprefix("sha256:")
                    self.state.commit(
                        accepted.manifest.target, fetched.data, digest, accepted.plan_bytes
                    )
        except TransferError as exc:
            raise SourceUnavailable(f"{self.location}: {exc}") from None
        except Rejected as exc:
            _trace.record(VERIFY, started, {"oneiric.source": self.location}, str(exc))
            raise PlanInvalid(f"{self.location}: rejected ({exc})") from None
        except OSError as exc:
            raise SourceUnavailable(f"{self.location}: state: {exc}") from None
        manifest = accepted.manifest
        attributes = {"oneiric.source": self.location, "oneiric.target": manifest.target}
        _trace.record(VERIFY, started, {**attributes, "oneiric.serial": manifest.serial})
        self._etag = fetched.etag
        self._accepted = accepted
        self.target = accepted.manifest.target
        return Candidate(
            accepted.plan,
            accepted.manifest.serial,
            accepted.plan_bytes,
            accepted.manifest.expires_at.timestamp(),
        )
