"""The attack suite of DESIGN §5: every case real keys and real signed bytes.

Each attack goes through `sync` (fetch → verify → persist) over a state
directory that already holds a last-known-good manifest (serial 5), and must
end with a specific check named, nothing persisted and the old state intact.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from oneiric._delivery.checks import Check, Rejected, SecurityError, TransferError, TrustError
from oneiric._delivery.fetch import Fetcher
from oneiric._delivery.manifest import parse_payload, sync, verify_manifest
from oneiric._delivery.store import State
from oneiric._delivery.trust import (
    DEFAULT_MAX_VALIDITY_S,
    TRUST_PAYLOAD_TYPE,
    Trust,
    parse_trust,
    trust_bytes,
)
from oneiric._plan.canonical import dumps
from seckit import (
    DEV_PLAN,
    PROD_PLAN,
    Key,
    edit_envelope,
    envelope,
    manifest,
    payload_dict,
    variant_plan,
)

Keys = tuple[Key, Key, Key]


def snapshot(state: State) -> dict[str, bytes]:
    """Every file of the state directory but the lock: what 'nothing persisted' compares."""
    if not state.root.exists():
        return {}
    return {
        str(p.relative_to(state.root)): p.read_bytes()
        for p in sorted(state.root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def deliver(tmp_path: Path, data: bytes, name: str = "m.dsse.json") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture
def good_state(tmp_path: Path, keys: Keys, trust: Trust, state: State, fetcher: Fetcher) -> State:
    """A state directory whose last-known-good manifest is serial 5 for prod."""
    source = deliver(tmp_path, manifest(keys[:2], serial=5), "good.dsse.json")
    assert sync(source, trust, state, fetcher).status == "accepted"
    return state


def assert_rejected(
    tmp_path: Path,
    data: bytes,
    trust: Trust,
    state: State,
    fetcher: Fetcher,
    check: Check,
    kind: type[SecurityError] = Rejected,
    **options: Any,
) -> SecurityError:
    before = snapshot(state)
    with pytest.raises(kind) as caught:
        sync(deliver(tmp_path, data), trust, state, fetcher, **options)
    assert caught.value.check is check, caught.value
    assert snapshot(state) == before
    assert not [p for p in state.root.rglob("*.tmp")]
    return caught.value


# --- positive cases ---------------------------------------------------------------------


@pytest.mark.parametrize("pair", [(0, 1), (0, 2), (1, 2)])
def test_threshold_two_of_three_any_two_distinct_keys(
    tmp_path: Path, keys: Keys, trust: Trust, state: State, fetcher: Fetcher, pair: tuple[int, int]
) -> None:
    data = manifest([keys[pair[0]], keys[pair[1]]], serial=1)
    synced = sync(deliver(tmp_path, data), trust, state, fetcher)
    assert synced.status == "accepted"
    assert synced.accepted is not None
    assert synced.accepted.verified.signers == {keys[pair[0]].keyid, keys[pair[1]].keyid}
    assert state.manifest("prod") == data
    assert state.plan("prod", synced.accepted.manifest.plan.digest[7:]) == PROD_PLAN


def test_later_serial_accepted_and_replaces_last_good(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[1:], serial=6)
    assert sync(deliver(tmp_path, data), trust, good_state, fetcher).status == "accepted"
    assert good_state.manifest("prod") == data
    assert len(list((good_state.root / "prod" / "plans").iterdir())) == 1


def test_same_serial_same_payload_is_unchanged_not_rewritten(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    stored = good_state.manifest("prod")
    assert stored is not None
    before = snapshot(good_state)
    assert sync(deliver(tmp_path, stored), trust, good_state, fetcher).status == "unchanged"
    assert snapshot(good_state) == before


# --- tampering and signatures ---------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 40, -2])
def test_one_flipped_payload_byte(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher, position: int
) -> None:
    def flip(raw: dict[str, Any]) -> None:
        payload = bytearray(base64.b64decode(raw["payload"]))
        payload[position] ^= 0x01
        raw["payload"] = base64.b64encode(bytes(payload)).decode()

    data = edit_envelope(manifest(keys, serial=6), flip)
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.SIGNATURE)


def test_no_signatures(tmp_path: Path, trust: Trust, good_state: State, fetcher: Fetcher) -> None:
    data = manifest([], serial=6)
    error = assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.THRESHOLD)
    assert "0 distinct" in error.message


def test_empty_signature(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = edit_envelope(
        manifest(keys[:2], serial=6), lambda raw: raw["signatures"][1].update(sig="")
    )
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.SIGNATURE)


def test_signature_by_unknown_key(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest([keys[0], keys[1], Key.new()], serial=6)
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.UNKNOWN_KEY)


def test_malformed_base64_signature(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = edit_envelope(
        manifest(keys[:2], serial=6), lambda raw: raw["signatures"][0].update(sig="!!not base64!!")
    )
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.ENCODING)


def test_malformed_base64_payload(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = edit_envelope(manifest(keys[:2], serial=6), lambda raw: raw.update(payload="e30=x"))
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.ENCODING)


def test_repeated_signature_does_not_fake_threshold(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    def repeat(raw: dict[str, Any]) -> None:
        raw["signatures"] = raw["signatures"] * 3

    data = edit_envelope(manifest(keys[:1], serial=6), repeat)
    error = assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.THRESHOLD)
    assert "1 distinct" in error.message


def test_trusted_key_listed_twice_in_trust_file(keys: Keys) -> None:
    entry = keys[0].public.to_json()
    data = dumps({"format": "oneiric-trust", "keys": [entry, entry], "threshold": 2, "version": 1})
    with pytest.raises(TrustError) as caught:
        parse_trust(data, "trust.json")
    assert caught.value.check is Check.TRUST
    assert "second time" in caught.value.message


def test_trust_file_keyid_must_be_the_keys_hash(keys: Keys) -> None:
    entry = {**keys[0].public.to_json(), "keyid": keys[1].keyid}
    data = dumps(
        {
            "format": "oneiric-trust",
            "keys": [entry, keys[1].public.to_json()],
            "threshold": 2,
            "version": 1,
        }
    )
    with pytest.raises(TrustError, match="not the sha256 of its key"):
        parse_trust(data, "trust.json")


def test_wrong_payload_type(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = envelope(payload_dict(serial=6), keys[:2], TRUST_PAYLOAD_TYPE)
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.PAYLOAD_TYPE)


# --- freshness: rollback, reuse, expiry -----------------------------------------------------


def test_lower_serial_is_a_rollback(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[:2], serial=4)
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.ROLLBACK)


def test_lower_serial_rejected_even_when_the_stored_manifest_expired(
    tmp_path: Path, keys: Keys, trust: Trust, state: State, fetcher: Fetcher
) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    stored = manifest(keys[:2], serial=5, expires=past)
    with state.locked():
        state.commit("prod", stored, parse_payload(json_payload(stored)).plan.digest[7:], PROD_PLAN)
    data = manifest(keys[:2], serial=4)
    assert_rejected(tmp_path, data, trust, state, fetcher, Check.ROLLBACK)


def json_payload(data: bytes) -> bytes:
    return base64.b64decode(json.loads(data)["payload"])


def test_same_serial_different_plan(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[:2], serial=5, plan=variant_plan("-x"))
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.SERIAL_REUSE)


def test_expired(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[:2], serial=6, expires=datetime.now(UTC) - timedelta(seconds=1))
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.EXPIRED)


def test_expires_equal_to_now_is_expired(keys: Keys, trust: Trust) -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    data = manifest(keys[:2], serial=6, expires=expires)
    with pytest.raises(Rejected) as caught:
        verify_manifest(data, trust, now=expires)
    assert caught.value.check is Check.EXPIRED
    assert verify_manifest(data, trust, now=expires - timedelta(seconds=1)).manifest.serial == 6


def test_expiry_far_in_the_future_is_refused_by_the_default_validity_window(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    assert trust.max_validity_s == DEFAULT_MAX_VALIDITY_S == 30 * 86400
    forever = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    data = manifest(keys[:2], serial=6, expires=forever)
    error = assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.VALIDITY)
    assert "9999-12-31T23:59:59Z" in error.message
    just_over = datetime.now(UTC) + timedelta(days=30, minutes=5)
    data = manifest(keys[:2], serial=6, expires=just_over)
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.VALIDITY)


def test_validity_window_travels_with_the_trust_file(
    tmp_path: Path, keys: Keys, good_state: State, fetcher: Fetcher
) -> None:
    hour = parse_trust(trust_bytes(1, 2, [k.public for k in keys], 3600), "one hour")
    assert hour.max_validity_s == 3600
    two_hours = datetime.now(UTC) + timedelta(hours=2)
    data = manifest(keys[:2], serial=6, expires=two_hours)
    assert_rejected(tmp_path, data, hour, good_state, fetcher, Check.VALIDITY)
    half_hour = manifest(keys[:2], serial=6, expires=datetime.now(UTC) + timedelta(minutes=30))
    assert sync(deliver(tmp_path, half_hour), hour, good_state, fetcher).status == "accepted"


def test_trust_file_without_a_validity_window_loads_with_the_default(keys: Keys) -> None:
    old = {
        "format": "oneiric-trust",
        "version": 1,
        "threshold": 2,
        "keys": [k.public.to_json() for k in keys],
    }
    assert parse_trust(dumps(old), "old trust").max_validity_s == DEFAULT_MAX_VALIDITY_S
    for bad in (0, -1, "30d", 1.5, True):
        with pytest.raises(TrustError) as caught:
            parse_trust(dumps({**old, "max_validity_seconds": bad}), "bad trust")
        assert "max_validity_seconds" in caught.value.message


# --- target -----------------------------------------------------------------------------------


def test_manifest_for_another_target(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[:2], serial=6, target="dev", plan=DEV_PLAN)
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.TARGET, target="prod")


def test_manifest_for_prod_carrying_the_dev_plan(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[:2], serial=6, target="prod", plan=DEV_PLAN)
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.TARGET)


# --- strict JSON, signed and unsigned ---------------------------------------------------------


SIGNED_PAYLOADS: dict[str, bytes] = {
    "invalid_json": b'{"format": "oneiric-manifest",',
    "duplicate_key": b'{"format":"oneiric-manifest","version":1,"serial":9,"serial":1}',
    "huge_integer": b'{"serial": 1' + b"0" * 400 + b"}",
    "deep_nesting": b'{"plan":' + b"[" * 5000 + b"]" * 5000 + b"}",
    "invalid_utf8": b'{"target": "\xff\xfe"}',
    "lone_surrogate": b'{"target": "\\ud800"}',
    "nan": b'{"serial": NaN}',
}


@pytest.mark.parametrize("case", sorted(SIGNED_PAYLOADS))
def test_signed_payload_that_is_not_strict_json(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher, case: str
) -> None:
    data = envelope(SIGNED_PAYLOADS[case], keys[:2])
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.JSON)


ENVELOPE_MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "invalid_json": lambda data: data[:-5],
    "duplicate_key": lambda data: data[:-1] + b',"payload":"e30="}',
    "huge_integer": lambda data: data[:-1] + b',"x":' + b"9" * 5000 + b"}",
    "deep_nesting": lambda data: data[:-1] + b',"x":' + b"[" * 100 + b"]" * 100 + b"}",
    "invalid_utf8": lambda data: data[:-1] + b',"x":"\xc3\x28"}',
    "utf16": lambda data: data.decode().encode("utf-16"),
}


@pytest.mark.parametrize("case", sorted(ENVELOPE_MUTATIONS))
def test_envelope_that_is_not_strict_json(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher, case: str
) -> None:
    data = ENVELOPE_MUTATIONS[case](manifest(keys[:2], serial=6))
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.JSON)


def test_unknown_payload_field_is_rejected(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = envelope({**payload_dict(serial=6), "critical_new_rule": True}, keys[:2])
    error = assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.PAYLOAD)
    assert "critical_new_rule" in error.message


def test_unknown_manifest_version(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = envelope({**payload_dict(serial=6), "version": 2}, keys[:2])
    error = assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.VERSION)
    assert "knows 1" in error.message


def test_inline_plan_with_wrong_digest_is_not_parsed(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    fields = payload_dict(serial=6)
    fields["plan"]["data"] = base64.b64encode(b"{" * len(PROD_PLAN)).decode()
    data = envelope(fields, keys[:2])
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.PLAN_DIGEST)


def test_signed_plan_that_is_not_a_valid_plan(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[:2], serial=6, plan=b'{"format": "oneiric-plan", "version": "1.0"}')
    assert_rejected(tmp_path, data, trust, good_state, fetcher, Check.PLAN)


def test_manifest_over_the_size_cap(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[:2], serial=6)
    assert_rejected(
        tmp_path, data, trust, good_state, fetcher, Check.SIZE, max_manifest_bytes=len(data) - 1
    )


def test_plan_over_the_size_cap(
    tmp_path: Path, keys: Keys, trust: Trust, good_state: State, fetcher: Fetcher
) -> None:
    data = manifest(keys[:2], serial=6)
    assert_rejected(
        tmp_path, data, trust, good_state, fetcher, Check.SIZE, max_plan_bytes=len(PROD_PLAN) - 1
    )


# --- persistence ------------------------------------------------------------------------------


def test_failing_os_replace_leaves_old_state_and_no_temp_files(
    tmp_path: Path,
    keys: Keys,
    trust: Trust,
    good_state: State,
    fetcher: Fetcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second replace (the manifest, the commit point) fails: the new plan goes too."""
    real_replace = os.replace
    calls: list[str] = []

    def failing_replace(src: Any, dst: Any) -> None:
        calls.append(str(dst))
        if str(dst).endswith("manifest.dsse.json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    data = manifest(keys[:2], serial=6, plan=variant_plan("-new"))
    before = snapshot(good_state)
    with pytest.raises(TransferError) as caught:
        sync(deliver(tmp_path, data), trust, good_state, fetcher)
    assert caught.value.check is Check.STATE
    assert "No space left" in caught.value.message
    assert any(c.endswith(".json") and "plans" in c for c in calls)  # the plan was written first
    assert snapshot(good_state) == before
    assert not list(good_state.root.rglob("*.tmp"))


def test_trust_schema_describes_trust_files_old_and_new(keys: Keys) -> None:
    """docs/trust.schema.json accepts what `trust_bytes` writes and pre-window trust files,
    and refuses what `parse_trust` refuses about the validity window."""
    from jsonschema import Draft202012Validator
    from seckit import ROOT

    schema = json.loads((ROOT / "docs" / "trust.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    public = [k.public for k in keys]
    new = json.loads(trust_bytes(1, 2, public, 3600))
    validator.validate(new)
    validator.validate(json.loads(trust_bytes(1, 2, public)))
    old = {k: v for k, v in new.items() if k != "max_validity_seconds"}
    validator.validate(old)
    for bad in (0, "30d", True):
        assert not validator.is_valid({**old, "max_validity_seconds": bad})
        with pytest.raises(TrustError):
            parse_trust(dumps({**old, "max_validity_seconds": bad}), "bad")
