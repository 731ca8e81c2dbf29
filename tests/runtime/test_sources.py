"""Plan sources re-read an unchanged plan without parsing it again, and verify it all the same."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from nacl.signing import SigningKey
from oneiric._delivery import dsse
from oneiric._delivery.keys import PublicKey
from oneiric._delivery.manifest import MANIFEST_PAYLOAD_TYPE, manifest_payload
from oneiric._delivery.sources import ManifestSource, PlanInvalid, UnsignedPlanFile
from oneiric._delivery.store import State
from oneiric._delivery.trust import trust_bytes
from planbuild import component, plan

V1 = plan(component("adapter:cache"), target="prod").to_bytes()
V2 = plan(component("adapter:cache", "two"), target="prod").to_bytes()


def test_unsigned_file_parses_only_changed_bytes(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(V1)
    source = UnsignedPlanFile(path)
    first = anyio.run(source.fetch)
    assert anyio.run(source.fetch).plan is first.plan  # same bytes: the parsed plan is reused

    path.write_bytes(V2)
    second = anyio.run(source.fetch)
    assert second.plan is not first.plan
    assert second.plan.components[0].provider == "two"

    path.write_bytes(V2[:-5])  # truncated: refused, never served from the cache
    with pytest.raises(PlanInvalid):
        anyio.run(source.fetch)


def _sign(key: SigningKey, public: PublicKey, serial: int) -> bytes:
    expires = datetime.now(UTC) + timedelta(days=1)
    payload = manifest_payload("prod", serial, expires, V1, None)
    return dsse.sign(MANIFEST_PAYLOAD_TYPE, payload, [(key, public.keyid)]).to_bytes()


def test_manifest_reuses_the_plan_but_verifies_every_read(tmp_path: Path) -> None:
    key = SigningKey.generate()
    public = PublicKey.from_raw(bytes(key.verify_key))
    trust = tmp_path / "trust.json"
    trust.write_bytes(trust_bytes(1, 1, [public]))
    manifest = tmp_path / "prod.dsse.json"
    manifest.write_bytes(_sign(key, public, serial=1))
    state_dir = tmp_path / "state"
    source = ManifestSource(str(manifest), trust, state_dir)

    first = anyio.run(source.fetch)
    assert first is not None
    again = anyio.run(source.fetch)
    assert again is not None
    assert again.plan is first.plan  # identical plan bytes: not parsed a second time

    # Another writer of the state directory accepted serial 2 meanwhile: the same
    # manifest bytes are now a rollback, and the re-read must say so.
    other = State(state_dir)
    with other.locked():
        other.commit("prod", _sign(key, public, serial=2), hashlib.sha256(V1).hexdigest(), V1)
    with pytest.raises(PlanInvalid, match=r"rollback|serial"):
        anyio.run(source.fetch)
