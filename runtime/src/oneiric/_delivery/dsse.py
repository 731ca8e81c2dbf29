"""DSSE envelopes (github.com/secure-systems-lab/dsse) signed with Ed25519.

    {"payloadType": "...", "payload": "<base64>",
     "signatures": [{"keyid": "...", "sig": "<base64>"}]}

Signatures cover PAE(payloadType, payload) =
"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, over the decoded payload
bytes, so the verifier checks exactly the bytes it will then parse and nothing
is ever re-serialised.  Base64 is the standard alphabet with padding, checked
strictly.  This module is the one signer and the one verifier of the project:
`oneiricc sign` imports it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from oneiric._delivery.checks import Check, Rejected
from oneiric._plan import strictjson
from oneiric._plan.canonical import dumps
from oneiric._text import plural

SIGNATURE_BYTES = 64


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signatures actually sign."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        """Canonical JSON of the envelope (its payload bytes are carried unchanged)."""
        return dumps(
            {
                "payload": base64.b64encode(self.payload).decode("ascii"),
                "payloadType": self.payload_type,
                "signatures": [
                    {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                    for s in self.signatures
                ],
            }
        )

    def with_signature(self, key: SigningKey, keyid: str) -> Envelope:
        """This envelope plus a signature by `key` (replacing an earlier one by the same key)."""
        signature = Signature(keyid, key.sign(pae(self.payload_type, self.payload)).signature)
        kept = tuple(s for s in self.signatures if s.keyid != keyid)
        return Envelope(self.payload_type, self.payload, (*kept, signature))


def b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Rejected(Check.ENCODING, f"{what} is not valid base64") from None


def parse_envelope(data: bytes) -> Envelope:
    """Parse envelope bytes strictly; the payload is decoded but not interpreted."""
    try:
        raw = strictjson.loads(data)
    except strictjson.StrictJSONError as exc:
        raise Rejected(Check.JSON, f"envelope: {exc}") from None
    if not isinstance(raw, dict) or set(raw) != {"payload", "payloadType", "signatures"}:
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise Rejected(
            Check.ENVELOPE,
            f"expected exactly payload, payloadType and signatures, found {found}",
        )
    payload_type, payload, signatures = raw["payloadType"], raw["payload"], raw["signatures"]
    if not isinstance(payload_type, str) or not isinstance(payload, str):
        raise Rejected(Check.ENVELOPE, "payloadType and payload must be strings")
    if not isinstance(signatures, list):
        raise Rejected(Check.ENVELOPE, "signatures must be a list")
    parsed = []
    for index, entry in enumerate(signatures):
        if (
            not isinstance(entry, dict)
            or set(entry) != {"keyid", "sig"}
            or not isinstance(entry["keyid"], str)
            or not isinstance(entry["sig"], str)
        ):
            raise Rejected(
                Check.ENVELOPE, f"signatures[{index}] must be {{keyid: string, sig: string}}"
            )
        parsed.append(
            Signature(entry["keyid"], b64decode(entry["sig"], f"signatures[{index}].sig"))
        )
    return Envelope(payload_type, b64decode(payload, "payload"), tuple(parsed))


def sign(payload_type: str, payload: bytes, keys: Iterable[tuple[SigningKey, str]]) -> Envelope:
    envelope = Envelope(payload_type, payload, ())
    for key, keyid in keys:
        envelope = envelope.with_signature(key, keyid)
    return envelope


def verify(
    envelope: Envelope,
    payload_type: str,
    keys: Mapping[str, VerifyKey],
    *,
    skip_unknown: bool = False,
    role: str = "",
) -> frozenset[str]:
    """Check the envelope's signatures against `keys`; return the distinct keyids that signed.

    Every signature by a listed key must verify, and by default every signature
    must be by a listed key: an unknown key, an empty or a malformed signature is
    a rejection, not something to skip.  (`skip_unknown` is for trust rotation,
    where the old keys are checked first, before the new ones are known.)  A
    key that signs twice counts once: the result is a set.  `role` prefixes
    messages ("old trust: ...").
    """
    prefix = f"{role}: " if role else ""
    if envelope.payload_type != payload_type:
        raise Rejected(
            Check.PAYLOAD_TYPE,
            f"{prefix}payloadType is {envelope.payload_type!r}, expected {payload_type!r}",
        )
    message = pae(envelope.payload_type, envelope.payload)
    signed: set[str] = set()
    for index, signature in enumerate(envelope.signatures):
        key = keys.get(signature.keyid)
        if key is None:
            if skip_unknown:
                continue
            raise Rejected(
                Check.UNKNOWN_KEY,
                f"{prefix}signatures[{index}] is by key {signature.keyid[:16]!r}, "
                "which the trust file does not list",
            )
        if len(signature.sig) != SIGNATURE_BYTES:
            raise Rejected(
                Check.SIGNATURE,
                f"{prefix}signatures[{index}] is {len(signature.sig)} bytes, "
                f"an Ed25519 signature is {SIGNATURE_BYTES}",
            )
        try:
            key.verify(message, signature.sig)
        except BadSignatureError:
            raise Rejected(
                Check.SIGNATURE,
                f"{prefix}signatures[{index}] by key {signature.keyid[:16]} does not verify",
            ) from None
        signed.add(signature.keyid)
    return frozenset(signed)


def require_threshold(signed: frozenset[str], threshold: int, *, role: str = "") -> None:
    if len(signed) < threshold:
        prefix = f"{role}: " if role else ""
        raise Rejected(
            Check.THRESHOLD,
            f"{prefix}{plural(len(signed), 'distinct trusted signature')}, "
            f"threshold is {threshold}",
        )
