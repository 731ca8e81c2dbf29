"""Trust files (the keys a runtime accepts, and how many must sign) and their rotation.

    {"format": "oneiric-trust", "version": 1, "threshold": 2,
     "max_validity_seconds": 2592000,
     "keys": [{"keyid": "<sha256 hex of the key>", "public": "<base64>", "scheme": "ed25519"}]}

`max_validity_seconds` (optional; `DEFAULT_MAX_VALIDITY_S`, 30 days, when
absent, so trust files written before it existed keep loading) bounds how
far ahead a manifest's `expires` may lie: freeze protection does not rest on
every signer choosing a short expiry.  It travels with the keys: only a
rotation signed by both thresholds changes it.

A trust file is installed out of band.  It is replaced only by `rotate`: a
DSSE envelope (payloadType `TRUST_PAYLOAD_TYPE`) whose payload is the new
trust file, signed by the threshold of the current keys *and* by the
threshold of the new keys, with a higher version (as TUF rotates its root).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import VerifyKey

from oneiric._delivery import dsse
from oneiric._delivery.checks import Check, Rejected, TrustError
from oneiric._delivery.keys import KeyFileError, PublicKey, parse_public_entry
from oneiric._plan import strictjson
from oneiric._plan.canonical import MAX_SAFE_INTEGER, dumps

TRUST_FORMAT = "oneiric-trust"
TRUST_PAYLOAD_TYPE = "application/vnd.oneiric.trust+json"
MAX_TRUST_BYTES = 1024 * 1024
DEFAULT_MAX_VALIDITY_S = 30 * 86400
_FIELDS = {"format", "version", "threshold", "keys"}
_OPTIONAL = {"max_validity_seconds"}


@dataclass(frozen=True)
class Trust:
    version: int
    threshold: int
    keys: dict[str, PublicKey]
    max_validity_s: int = DEFAULT_MAX_VALIDITY_S
    verifiers: dict[str, VerifyKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        verifiers = {keyid: key.verifier() for keyid, key in self.keys.items()}
        object.__setattr__(self, "verifiers", verifiers)


def trust_bytes(
    version: int,
    threshold: int,
    keys: Iterable[PublicKey],
    max_validity_s: int = DEFAULT_MAX_VALIDITY_S,
) -> bytes:
    """Canonical bytes of a trust file; checked by `parse_trust` before returning."""
    data = (
        dumps(
            {
                "format": TRUST_FORMAT,
                "keys": [k.to_json() for k in keys],
                "max_validity_seconds": max_validity_s,
                "threshold": threshold,
                "version": version,
            }
        )
        + b"\n"
    )
    parse_trust(data, "new trust file")
    return data


def parse_trust(data: bytes, where: str) -> Trust:
    def bad(message: str) -> TrustError:
        return TrustError(Check.TRUST, f"{where}: {message}")

    if len(data) > MAX_TRUST_BYTES:
        raise bad(f"larger than {MAX_TRUST_BYTES} bytes")
    try:
        raw = strictjson.loads(data)
    except strictjson.StrictJSONError as exc:
        raise bad(str(exc)) from None
    if not isinstance(raw, dict) or not _FIELDS <= set(raw) <= _FIELDS | _OPTIONAL:
        raise bad("expected format, version, threshold, keys and optionally max_validity_seconds")
    if raw["format"] != TRUST_FORMAT:
        raise bad(f"format is {raw['format']!r}, expected {TRUST_FORMAT!r}")
    version, threshold, entries = raw["version"], raw["threshold"], raw["keys"]
    if type(version) is not int or not 1 <= version <= MAX_SAFE_INTEGER:
        raise bad("version must be a positive integer")
    if not isinstance(entries, list) or not entries:
        raise bad("keys must be a non-empty list")
    keys: dict[str, PublicKey] = {}
    for index, entry in enumerate(entries):
        try:
            key = parse_public_entry(entry, f"keys[{index}]")
        except KeyFileError as exc:
            raise bad(str(exc)) from None
        if key.keyid in keys:
            raise bad(
                f"keys[{index}] lists key {key.keyid[:16]} a second time; "
                "a key may be listed once (it would count once anyway)"
            )
        keys[key.keyid] = key
    if type(threshold) is not int or not 1 <= threshold <= len(keys):
        raise bad(f"threshold must be an integer from 1 to the number of keys ({len(keys)})")
    max_validity = raw.get("max_validity_seconds", DEFAULT_MAX_VALIDITY_S)
    if type(max_validity) is not int or not 1 <= max_validity <= MAX_SAFE_INTEGER:
        raise bad("max_validity_seconds must be a positive integer (seconds)")
    return Trust(version, threshold, keys, max_validity)


def load_trust(path: Path) -> Trust:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TRUST_BYTES + 1)
    except OSError as exc:
        raise TrustError(Check.TRUST, f"cannot read trust file {path}: {exc.strerror}") from None
    return parse_trust(data, str(path))


def rotate(current: Trust, envelope_bytes: bytes) -> tuple[Trust, bytes]:
    """Verify a rotation envelope against `current`; return the new trust and its exact bytes.

    Order matters: the current keys' threshold is checked over the exact
    payload bytes before they are parsed; only then are the new keys read and
    their own threshold checked.
    """
    envelope = dsse.parse_envelope(envelope_bytes)
    old = dsse.verify(
        envelope, TRUST_PAYLOAD_TYPE, current.verifiers, skip_unknown=True, role="current keys"
    )
    if len(old) < current.threshold:
        raise Rejected(
            Check.ROTATION,
            f"signed by {len(old)} of the current keys, threshold is {current.threshold}",
        )
    try:
        new = parse_trust(envelope.payload, "new trust file")
    except TrustError as exc:
        raise Rejected(Check.TRUST, exc.message) from None
    signed = dsse.verify(envelope, TRUST_PAYLOAD_TYPE, {**current.verifiers, **new.verifiers})
    by_new = signed & new.keys.keys()
    if len(by_new) < new.threshold:
        raise Rejected(
            Check.ROTATION, f"signed by {len(by_new)} of the new keys, threshold is {new.threshold}"
        )
    if new.version <= current.version:
        raise Rejected(
            Check.ROTATION,
            f"new trust version {new.version} is not higher than the current {current.version}",
        )
    return new, envelope.payload
