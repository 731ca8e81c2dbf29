"""Hashing, signing, serialisation, JSON Schema and transform actions: known vectors, bad
input (a clear ActionError, nothing half done), plan components and the command line."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from oneiric.actions import BUILTINS, ActionError, builtin
from oneiric.actions.crypto import digest, sign, verify
from oneiric.actions.serialize import decode, encode
from oneiric.actions.transform import redact, transform
from oneiric.actions.validate import validate
from wfkit import build_plan, oneiric


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_every_builtin_resolves() -> None:
    for name in BUILTINS:
        assert callable(builtin(name)), name


def test_hashes_match_known_vectors() -> None:
    assert digest({"data": "abc"})["hex"] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    blake = digest({"data": "abc"}, algorithm="blake2b", digest_size=64)["hex"]
    assert blake == hashlib.blake2b(b"abc").hexdigest()
    short = digest({"data": b64(b"\x00\xff"), "encoding": "base64", "algorithm": "blake2b"})
    assert short["hex"] == hashlib.blake2b(b"\x00\xff", digest_size=32).hexdigest()
    assert base64.b64decode(short["base64"]).hex() == short["hex"]


def test_hmac_rfc4231_case_2_and_verify() -> None:
    signed = sign({"data": "what do ya want for nothing?"}, key="Jefe")
    assert base64.b64decode(signed["signature"]).hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    payload = {"data": "what do ya want for nothing?", "signature": signed["signature"]}
    assert verify(payload, key="Jefe") == {"valid": True}
    assert verify(payload, key="jefe") == {"valid": False}
    assert verify({**payload, "data": "tampered"}, key="Jefe") == {"valid": False}
    long = sign({"data": "x"}, key="k", algorithm="hmac-sha512")
    assert len(base64.b64decode(long["signature"])) == 64


def test_ed25519_sign_and_verify() -> None:
    seed = bytes(range(32))
    public = b64(bytes(SigningKey(seed).verify_key))
    signed = sign({"data": "order 42"}, key=b64(seed), algorithm="ed25519")
    assert signed["signature"] == b64(SigningKey(seed).sign(b"order 42").signature)
    payload = {"data": "order 42", "signature": signed["signature"]}
    assert verify(payload, key=public, algorithm="ed25519") == {"valid": True}
    assert verify({**payload, "data": "order 43"}, key=public, algorithm="ed25519") == {
        "valid": False
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: digest({"data": "x", "algorithm": "md5"}), 'unknown algorithm "md5"'),
        (lambda: digest({"data": "x"}, algorithm="blake2b", digest_size=65), "1 to 64 bytes"),
        (lambda: digest({"data": "!!", "encoding": "base64"}), 'payload "data" is not base64'),
        (lambda: digest({"data": 1}), 'payload "data" must be str'),
        (lambda: digest([]), "must be a JSON object"),
        (lambda: sign({"data": "x"}), 'needs config "key"'),
        (lambda: sign({"data": "x"}, key="k", algorithm="rsa"), 'unknown algorithm "rsa"'),
        (lambda: sign({"data": "x"}, key="c2hvcnQ=", algorithm="ed25519"), "base64 of 32 bytes"),
        (lambda: verify({"data": "x"}, key="k"), 'needs "signature"'),
        (lambda: verify({"data": "x", "signature": "%%"}, key="k"), "is not base64"),
        (
            lambda: verify(
                {"data": "x", "signature": b64(b"1")}, key=b64(bytes(32)), algorithm="ed25519"
            ),
            "64 bytes, not 1",
        ),
    ],
)
def test_crypto_bad_input(call: Any, message: str) -> None:
    with pytest.raises(ActionError, match=message) as caught:
        call()
    assert "Jefe" not in str(caught.value)


def test_serialisation_round_trips() -> None:
    value = {"b": [1, 2.5, None, True], "a": "é"}
    as_json = encode({"value": value})
    assert as_json["data"] == '{"a":"é","b":[1,2.5,null,true]}'
    assert decode({"data": as_json["data"]}) == {"value": value}
    packed = encode({"value": value, "format": "msgpack"})
    assert packed["encoding"] == "base64"
    assert decode({"data": packed["data"], "format": "msgpack"}) == {"value": value}
    assert decode({"data": packed["data"]}, format="msgpack") == {"value": value}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: encode({"value": float("nan")}), "no JSON form"),
        (lambda: encode({}), 'needs "value"'),
        (lambda: encode({"value": 1, "format": "xml"}), 'unknown format "xml"'),
        (lambda: decode({"data": "{"}), "not JSON"),
        (lambda: decode({"data": "AAAA"}, max_bytes=2), "the limit is 2"),
        (lambda: decode({"data": b64(b"\xc1"), "format": "msgpack"}), "not MessagePack"),
        (lambda: decode({"data": b64(b"\xc4\x01x"), "format": "msgpack"}), "bytes values"),
    ],
)
def test_serialisation_bad_input(call: Any, message: str) -> None:
    with pytest.raises(ActionError, match=message):
        call()


SCHEMA = {
    "type": "object",
    "required": ["id", "total"],
    "properties": {
        "id": {"type": "string"},
        "total": {"type": "integer", "minimum": 0},
        "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
    },
}


def test_json_schema_validation() -> None:
    assert validate({"value": {"id": "o1", "total": 3}}, schema=SCHEMA) == {
        "valid": True,
        "errors": [],
    }
    bad = validate({"value": {"total": -1, "lines": [{}]}, "schema": SCHEMA})
    assert bad["valid"] is False
    assert bad["errors"] == [
        {"path": "/", "message": "'id' is a required property"},
        {"path": "/lines/0", "message": "'sku' is a required property"},
        {"path": "/total", "message": "-1 is less than the minimum of 0"},
    ]
    with pytest.raises(ActionError, match=r"does not match the schema: /: 'id' is a required"):
        validate({"value": {"total": 1}}, schema=SCHEMA, strict=True)
    with pytest.raises(ActionError, match="the schema is invalid at /type"):
        validate({"value": 1, "schema": {"type": "nonsense"}})
    with pytest.raises(ActionError, match="no schema"):
        validate({"value": 1})


ORDER = {
    "id": "o1",
    "customer": {"name": "Ada", "email": "ada@example.org", "password": "hunter2"},
    "cards": [{"number": "4111", "cvc": "123"}, {"number": "5500", "cvc": "999"}],
    "notes": ["a", "b", "c"],
}


def test_transform_and_redact_by_path() -> None:
    before = copy.deepcopy(ORDER)
    redacted = redact(
        {"value": ORDER, "mask": ["cards.*.number"]}, drop=["customer.password", "cards.*.cvc"]
    )["value"]
    assert redacted == {
        "id": "o1",
        "customer": {"name": "Ada", "email": "ada@example.org"},
        "cards": [{"number": "***"}, {"number": "***"}],
        "notes": ["a", "b", "c"],
    }
    assert before == ORDER  # the input is never changed
    picked = transform(
        {"value": ORDER, "pick": ["id", "customer.email", "cards.*.number"]},
        rename={"customer.email": "mail"},
        drop=["notes.1"],
    )["value"]
    assert picked == {
        "id": "o1",
        "customer": {"mail": "ada@example.org"},
        "cards": [{"number": "4111"}, {"number": "5500"}],
    }
    assert transform({"value": ORDER, "drop": ["notes.0", "notes.2", "absent.path"]})["value"][
        "notes"
    ] == ["b"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"value": ORDER, "drop": ["a..b"]}, 'path "a..b" has an empty segment'),
        ({"value": ORDER, "mask": [3]}, "a path is a non-empty string"),
        ({"value": ORDER, "rename": {"id": "a.b"}}, "must be one key"),
        ({"drop": ["id"]}, 'needs "value"'),
        ({"value": ORDER, "pick": ["id"]}, "use transform"),
    ],
)
def test_transform_bad_input(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ActionError, match=message):
        (redact if "pick" in payload else transform)(payload)


def test_actions_from_a_plan_and_the_command_line(tmp_path: Path) -> None:
    seed = b64(bytes(range(32)))
    stack = (
        '  action sign_order "ed25519" {\n    impl "oneiric.actions.crypto:sign"\n'
        f'    config {{ key = "{seed}", algorithm = "ed25519" }}\n  }}\n'
        '  action scrub "default" {\n    impl "oneiric.actions.transform:redact"\n'
        '    config { drop = ["password"], mask = ["card"] }\n  }'
    )
    _, plan = build_plan(tmp_path, stack)
    common = ["--unsigned-plan", str(plan), "--state", str(tmp_path / "state")]
    signed = oneiric("action", "invoke", "sign_order", "--payload", '{"data": "x"}', *common)
    assert signed.returncode == 0, signed.stderr
    expected = b64(SigningKey(bytes(range(32))).sign(b"x").signature)
    assert json.loads(signed.stdout)["signature"] == expected
    scrubbed = oneiric(
        "action",
        "invoke",
        "scrub",
        "--payload",
        '{"value": {"password": "p", "card": "4111", "id": 1}}',
        *common,
    )
    assert scrubbed.returncode == 0, scrubbed.stderr
    assert json.loads(scrubbed.stdout) == {"value": {"card": "***", "id": 1}}
    hashed = oneiric("action", "invoke", "hash", "--payload", '{"data": "abc"}')
    assert json.loads(hashed.stdout)["hex"].startswith("ba7816bf")
    bad = oneiric(
        "action", "invoke", "validate", "--payload", '{"value": 1, "schema": {"type": 5}}'
    )
    assert bad.returncode == 1
    assert "the schema is invalid" in bad.stderr
    assert "Traceback" not in bad.stderr
