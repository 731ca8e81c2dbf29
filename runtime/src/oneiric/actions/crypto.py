"""Hashing, signing and verifying: SHA-256 and BLAKE2b digests, HMAC and Ed25519 signatures.

Payload: {"data": str, "encoding": "utf-8" | "base64"} (+ "signature", base64, to verify).
`hash` answers {"algorithm", "hex", "base64"}; `sign` answers {"algorithm", "signature"}
(base64); `verify` answers {"valid": bool} (a well-formed signature that does not match is
`false`, not an error).  The key comes from config, normally `secret()`: for HMAC its text
is the key; for Ed25519 `sign` takes the base64 32-byte seed and `verify` the base64 32-byte
public key.  No key or its bytes ever appears in a result or an error.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Literal

from oneiric.actions import ActionError, require
from oneiric.actions._data import b64, base64_bytes, payload_bytes

HashAlgorithm = Literal["sha256", "blake2b"]
SignAlgorithm = Literal["hmac-sha256", "hmac-sha512", "ed25519"]
HASHES = ("sha256", "blake2b")
SIGNATURES = ("hmac-sha256", "hmac-sha512", "ed25519")


def digest(
    payload: Any, *, algorithm: HashAlgorithm = "sha256", digest_size: int = 32
) -> dict[str, Any]:
    """The digest of `data`; BLAKE2b's size (1-64 bytes) is `digest_size`."""
    algorithm = require(payload, "algorithm", str, algorithm)
    data = payload_bytes(payload)
    if algorithm == "sha256":
        value = hashlib.sha256(data).digest()
    elif algorithm == "blake2b":
        size = require(payload, "digest_size", int, digest_size)
        if not 1 <= size <= 64:
            raise ActionError(f"blake2b digest_size must be 1 to 64 bytes, not {size}")
        value = hashlib.blake2b(data, digest_size=size).digest()
    else:
        raise ActionError(f'unknown algorithm "{algorithm}" (use {", ".join(HASHES)})')
    return {"algorithm": algorithm, "hex": value.hex(), "base64": b64(value)}


def sign(
    payload: Any, *, key: str | None = None, algorithm: SignAlgorithm = "hmac-sha256"
) -> dict[str, Any]:
    data = payload_bytes(payload)
    secret = _key(key, algorithm)
    if algorithm == "ed25519":
        from nacl.signing import SigningKey

        signature = SigningKey(_key32(secret, "an Ed25519 seed")).sign(data).signature
    else:
        signature = hmac.new(secret.encode(), data, _hmac_hash(algorithm)).digest()
    return {"algorithm": algorithm, "signature": b64(signature)}


def verify(
    payload: Any, *, key: str | None = None, algorithm: SignAlgorithm = "hmac-sha256"
) -> dict[str, Any]:
    data = payload_bytes(payload)
    signature = base64_bytes(require(payload, "signature", str), 'payload "signature"')
    secret = _key(key, algorithm)
    if algorithm == "ed25519":
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey

        verifier = VerifyKey(_key32(secret, "an Ed25519 public key"))
        if len(signature) != 64:
            raise ActionError(f"an Ed25519 signature is 64 bytes, not {len(signature)}")
        try:
            verifier.verify(data, signature)
        except BadSignatureError:
            return {"valid": False}
        return {"valid": True}
    expected = hmac.new(secret.encode(), data, _hmac_hash(algorithm)).digest()
    return {"valid": hmac.compare_digest(expected, signature)}


def _key(key: str | None, algorithm: str) -> str:
    if algorithm not in SIGNATURES:
        raise ActionError(f'unknown algorithm "{algorithm}" (use {", ".join(SIGNATURES)})')
    if not key:
        raise ActionError(f'{algorithm} needs config "key" (use secret("..."))')
    return key


def _key32(key: str, what: str) -> bytes:
    try:
        raw = base64_bytes(key.strip(), "config key")
    except ActionError:
        raw = b""
    if len(raw) != 32:
        raise ActionError(f"config key must be {what}: base64 of 32 bytes")
    return raw


def _hmac_hash(algorithm: str) -> Any:
    return hashlib.sha512 if algorithm == "hmac-sha512" else hashlib.sha256
