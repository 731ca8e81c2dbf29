"""The named checks of manifest verification and the errors that report them.

Every rejection names exactly one `Check`, so scripts (`--format json`), logs
and tests can tell a rollback from an expired manifest without parsing text.
`Rejected` means the input was examined and found wrong (exit 1);
`TransferError` means it could not be obtained (exit 2); `TrustError` means the
local trust file is unusable (exit 2: configuration).
"""

from __future__ import annotations

from enum import StrEnum


class Check(StrEnum):
    SIZE = "size"  # manifest or plan larger than its cap
    JSON = "json"  # not strict I-JSON: syntax, duplicate key, huge int, depth, UTF-8
    ENVELOPE = "envelope"  # not a DSSE envelope of the expected shape
    PAYLOAD_TYPE = "payload-type"
    ENCODING = "encoding"  # malformed base64 in payload or signature
    UNKNOWN_KEY = "unknown-key"  # a signature by a key the trust file does not list
    SIGNATURE = "signature"  # a signature that does not verify, or an empty one
    THRESHOLD = "threshold"  # fewer distinct trusted keys than the threshold
    PAYLOAD = "payload"  # payload does not match the manifest schema (unknown fields too)
    VERSION = "version"  # manifest format version this runtime does not know
    TARGET = "target"  # manifest (or its plan) is for another target
    EXPIRED = "expired"  # expires <= now
    VALIDITY = "validity"  # expires further ahead than the trust file's max validity
    ROLLBACK = "rollback"  # serial lower than the last accepted one
    SERIAL_REUSE = "serial-reuse"  # same serial as the last accepted one, other content
    PLAN_SIZE = "plan-size"  # plan bytes differ in length from the manifest's pin
    PLAN_DIGEST = "plan-digest"  # plan bytes differ from the manifest's sha256 pin
    PLAN = "plan"  # plan bytes are pinned correctly but are not a valid plan
    TRUST = "trust"  # trust file malformed (duplicate key, bad threshold, ...)
    ROTATION = "rotation"  # new trust file not signed by both thresholds, or not newer
    TIMEOUT = "timeout"  # transfer too slow
    TRANSFER = "transfer"  # source unreachable, HTTP error, unreadable file
    STATE = "state"  # state directory unusable


class SecurityError(Exception):
    """Base class: a failed check with a human message."""

    exit_code = 1

    def __init__(self, check: Check, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


class Rejected(SecurityError):
    """The manifest, plan or rotation was examined and refused."""


class TransferError(SecurityError):
    """The bytes could not be obtained (timeout, unreachable, I/O)."""

    exit_code = 2


class TrustError(SecurityError):
    """The local trust file cannot be used."""

    exit_code = 2
