"""Ed25519 key files.

A key id is the hex sha256 of the raw 32-byte public key, so it is derived,
never declared: a trust file cannot list one key under two ids.

    private (mode 0600): {"format": "oneiric-private-key", "scheme": "ed25519",
                          "keyid": "<hex>", "seed": "<base64, 32 bytes>"}
    public:              {"format": "oneiric-public-key", "scheme": "ed25519",
                          "keyid": "<hex>", "public": "<base64, 32 bytes>"}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey, VerifyKey

from oneiric._plan import strictjson
from oneiric._plan.canonical import dumps

SCHEME = "ed25519"
KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 64 * 1024


class KeyFileError(ValueError):
    pass


def keyid_of(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    keyid: str
    raw: bytes

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        if len(raw) != KEY_BYTES:
            raise KeyFileError(f"an Ed25519 public key is {KEY_BYTES} bytes, not {len(raw)}")
        return cls(keyid_of(raw), raw)

    def verifier(self) -> VerifyKey:
        return VerifyKey(self.raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "keyid": self.keyid,
            "public": base64.b64encode(self.raw).decode("ascii"),
            "scheme": SCHEME,
        }


def parse_public_entry(entry: Any, where: str) -> PublicKey:
    """A `{"keyid", "public", "scheme"}` object; the keyid must match the key."""
    if not isinstance(entry, dict) or set(entry) != {"keyid", "public", "scheme"}:
        raise KeyFileError(f"{where}: expected exactly keyid, public and scheme")
    if entry["scheme"] != SCHEME:
        raise KeyFileError(f"{where}: scheme {entry['scheme']!r} is not supported, only {SCHEME}")
    key = PublicKey.from_raw(_b64(entry["public"], f"{where}.public"))
    if entry["keyid"] != key.keyid:
        raise KeyFileError(
            f"{where}: keyid {entry['keyid']!r} is not the sha256 of its key ({key.keyid})"
        )
    return key


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise KeyFileError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyFileError(f"{where} is not valid base64") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes, not a key file")
    try:
        raw = strictjson.loads(data)
    except strictjson.StrictJSONError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise KeyFileError(f"{path}: not a key file")
    return raw


def load_public_key(path: Path) -> PublicKey:
    """Read a public key file, or the public half of a private key file."""
    raw = _read_json(path)
    kind = raw.pop("format", None)
    if kind == "oneiric-private-key":
        return load_private_key(path)[1]
    if kind != "oneiric-public-key":
        raise KeyFileError(f"{path}: not an oneiric public key file")
    return parse_public_entry(raw, str(path))


def load_private_key(path: Path) -> tuple[SigningKey, PublicKey]:
    raw = _read_json(path)
    if raw.get("format") != "oneiric-private-key" or set(raw) != {
        "format",
        "keyid",
        "scheme",
        "seed",
    }:
        raise KeyFileError(f"{path}: not an oneiric private key file")
    if raw["scheme"] != SCHEME:
        raise KeyFileError(f"{path}: scheme {raw['scheme']!r} is not supported")
    seed = _b64(raw["seed"], f"{path}: seed")
    if len(seed) != KEY_BYTES:
        raise KeyFileError(f"{path}: seed must be {KEY_BYTES} bytes")
    signing = SigningKey(seed)
    public = PublicKey.from_raw(bytes(signing.verify_key))
    if raw["keyid"] != public.keyid:
        raise KeyFileError(f"{path}: keyid does not match the key")
    return signing, public


def private_key_exposed(path: Path) -> bool:
    """True when group or others may read the private key file."""
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def write_private_key(path: Path, key: SigningKey) -> PublicKey:
    """Create `path` with mode 0600 (never overwriting) and the key in it."""
    public = PublicKey.from_raw(bytes(key.verify_key))
    data = (
        dumps(
            {
                "format": "oneiric-private-key",
                "keyid": public.keyid,
                "scheme": SCHEME,
                "seed": base64.b64encode(bytes(key)).decode("ascii"),
            }
        )
        + b"\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, 0o600)  # whatever the umask
        handle.write(data)
        handle.flush()
        os.fsync(fd)
    return public


def public_key_bytes(public: PublicKey) -> bytes:
    return dumps({"format": "oneiric-public-key", **public.to_json()}) + b"\n"
