"""Canonical JSON and plan digests: `oneiric.canonical` is RFC 8785, and `load_plan` checks."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from oneiric._plan.canonical import MAX_SAFE_INTEGER, dumps, dumps_sealed, sha256_digest
from oneiric._plan.model import KNOWN_MAJOR_VERSIONS, UnsupportedPlanVersion, load_plan
from support import ROOT

GOLDEN = sorted((ROOT / "golden").glob("*.plan.json"))

# Every code point except surrogates, weighted towards the ones where UTF-16 and code-point
# order disagree (U+E000 and above, astral planes) and the escapes JSON treats specially.
_tricky = st.sampled_from(
    [
        "\ue000",
        "\uffff",
        "\U0001f600",
        "\U0010ffff",
        "\u2028",
        "\x00",
        "\x1f",
        "\x7f",
        '"',
        "\\",
        "é",
        "\ud7ff",
    ]
)
_char = st.one_of(st.characters(exclude_categories=["Cs"]), _tricky)
_text = st.lists(_char, max_size=12).map("".join)
_safe_int = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5)


_scalars = st.none() | st.booleans() | _safe_int | _text
json_values = st.recursive(_scalars, _containers, max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_fast_path_matches_rfc8785(value: Any) -> None:
    assert dumps(value) == rfc8785.dumps(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_text, _text, min_size=2, max_size=8))
def test_key_order_is_utf16_order(value: dict[str, str]) -> None:
    """Keys sort by UTF-16 code units (RFC 8785 §3.2.3), not by code points."""
    decoded = json.loads(dumps(value))
    keys = list(decoded)
    assert keys == sorted(keys, key=lambda k: k.encode("utf-16-be"))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.floats(allow_nan=False, allow_infinity=False) | _safe_int | _text,
        _containers,
        max_leaves=12,
    )
)
def test_floats_go_through_rfc8785(value: Any) -> None:
    assert dumps(value) == rfc8785.dumps(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_text, json_values, max_size=6), _text)
def test_sealing_member_by_member_equals_encoding_the_whole(
    body: dict[str, Any], field: str
) -> None:
    """`dumps_sealed` splices members; the result is the reference encoding of the sealed whole."""
    body.pop(field, None)
    data, digest = dumps_sealed(body, field)
    assert digest == sha256_digest(rfc8785.dumps(body))
    assert data == rfc8785.dumps({**body, field: digest})


def test_sealing_refuses_a_body_that_has_the_field() -> None:
    with pytest.raises(ValueError, match="digest"):
        dumps_sealed({"digest": "x"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e21, b"1e+21"),
        (0.1, b"0.1"),
        (-0.0, b"0"),
        (100.0, b"100"),
        ({"b": 1.5, "a": [1, 2.0]}, b'{"a":[1,2],"b":1.5}'),
        ({"\ue000": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\ue000":1}'.encode()),
    ],
)
def test_known_encodings(value: Any, expected: bytes) -> None:
    assert dumps(value) == expected


@pytest.mark.parametrize("number", [MAX_SAFE_INTEGER + 1, -(MAX_SAFE_INTEGER + 1), 2**64])
def test_unsafe_integers_are_refused_like_rfc8785(number: int) -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps({"n": number})
    with pytest.raises(rfc8785.IntegerDomainError):
        dumps({"n": [number]})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(rfc8785.FloatDomainError):
        dumps([value])


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        dumps({"k": "\ud800"})


def test_digest_is_sha256_of_canonical_bytes() -> None:
    assert sha256_digest(b"{}") == "sha256:" + hashlib.sha256(b"{}").hexdigest()


# ------------------------------------------------------------ plan digests --


@pytest.fixture(params=GOLDEN, ids=lambda p: p.name)
def golden_bytes(request: pytest.FixtureRequest) -> bytes:
    path: Path = request.param
    return path.read_bytes()


def test_golden_plans_exist() -> None:
    assert {p.name for p in GOLDEN} >= {"dev.plan.json", "prod.plan.json"}


def test_golden_plan_round_trips_and_digest_is_independent(golden_bytes: bytes) -> None:
    plan = load_plan(golden_bytes)
    assert plan.to_bytes() == golden_bytes
    raw = json.loads(golden_bytes)
    # The file is its own canonical form, and the digest covers everything but itself.
    assert rfc8785.dumps(raw) == golden_bytes
    digest = raw.pop("digest")
    assert digest == "sha256:" + hashlib.sha256(rfc8785.dumps(raw)).hexdigest()


def _tampered(golden_bytes: bytes, change: Any) -> bytes:
    raw = json.loads(golden_bytes)
    change(raw)
    return rfc8785.dumps(raw)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: r["components"][0].update(provider="evil"), id="provider"),
        pytest.param(lambda r: r["activation_order"].reverse(), id="order"),
        pytest.param(lambda r: r["components"][0]["pin"].update(sha256="0" * 64), id="pin"),
        pytest.param(lambda r: r.update(profile="other"), id="profile"),
        pytest.param(lambda r: r.update(digest="sha256:" + "0" * 64), id="digest"),
    ],
)
def test_tampered_plan_is_rejected(golden_bytes: bytes, change: Any) -> None:
    with pytest.raises(ValueError, match="digest mismatch"):
        load_plan(_tampered(golden_bytes, change))


def test_plan_without_digest_is_rejected(golden_bytes: bytes) -> None:
    with pytest.raises(ValueError, match="digest mismatch"):
        load_plan(_tampered(golden_bytes, lambda r: r.pop("digest")))


@pytest.mark.parametrize("version", ["2.0", "0.9", "10.1", "", "one", None, 1])
def test_unknown_major_version_is_rejected_naming_known(golden_bytes: bytes, version: Any) -> None:
    data = _tampered(golden_bytes, lambda r: r.update(version=version))
    with pytest.raises(UnsupportedPlanVersion) as info:
        load_plan(data)
    message = str(info.value)
    assert repr(version) in message
    for major in KNOWN_MAJOR_VERSIONS:
        assert f"{major}.x" in message


def test_later_minor_version_is_accepted_when_sealed(golden_bytes: bytes) -> None:
    """A minor version bump within a known major is readable (the digest is recomputed)."""
    raw = json.loads(golden_bytes)
    raw["version"] = "1.7"
    raw.pop("digest")
    raw["digest"] = sha256_digest(rfc8785.dumps(raw))
    assert load_plan(rfc8785.dumps(raw)).version == "1.7"
