"""Mutated envelopes never crash the verifier: a typed rejection, or the original payload."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oneiric._delivery.checks import Rejected
from oneiric._delivery.dsse import parse_envelope
from oneiric._delivery.manifest import verify_manifest
from seckit import Key, make_trust, manifest

KEYS = (Key.new(), Key.new(), Key.new())
TRUST = make_trust(KEYS, threshold=2)[0]
NOW = datetime(2030, 1, 1, tzinfo=UTC)
ORIGINAL = manifest(KEYS[:2], serial=7, expires=datetime(2031, 1, 1, tzinfo=UTC), plan=b"{}")
PAYLOAD = parse_envelope(ORIGINAL).payload

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(ORIGINAL) - 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, len(ORIGINAL)), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, len(ORIGINAL) - 1), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.integers(0, len(ORIGINAL) - 1), st.none()),
)


def apply(data: bytes, change: tuple[str, int, object]) -> bytes:
    kind, at, arg = change
    at = at % (len(data) + 1)  # earlier changes may have shortened it
    if kind == "flip" and at < len(data):
        assert isinstance(arg, int)
        return data[:at] + bytes([data[at] ^ arg]) + data[at + 1 :]
    if kind == "insert":
        assert isinstance(arg, bytes)
        return data[:at] + arg + data[at:]
    if kind == "delete":
        assert isinstance(arg, int)
        return data[:at] + data[at + arg :]
    return data[:at] if kind == "truncate" else data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_envelope_is_rejected_with_a_check_or_keeps_its_payload(
    changes: list[tuple[str, int, object]],
) -> None:
    data = ORIGINAL
    for change in changes:
        data = apply(data, change)
    rejection: Rejected | None = None
    try:
        verified = verify_manifest(data, TRUST, now=NOW)
    except Rejected as exc:  # anything else (an IndexError, a RecursionError) fails the test
        rejection = exc
    else:  # e.g. a mutation inside JSON whitespace
        assert verified.payload == PAYLOAD
    assert rejection is None or (rejection.check.value and rejection.message)
