"""Binary data in JSON payloads: text ("utf-8", the default) or "base64"."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from oneiric.actions import ActionError, require

ENCODINGS = ("utf-8", "base64")


def payload_bytes(payload: Any, key: str = "data", encoding_key: str = "encoding") -> bytes:
    """`payload[key]` as bytes, decoded as `payload[encoding_key]` says."""
    text: str = require(payload, key, str)
    encoding = require(payload, encoding_key, str, "utf-8")
    if encoding == "utf-8":
        return text.encode()
    if encoding == "base64":
        return base64_bytes(text, f'payload "{key}"')
    raise ActionError(f'unknown {encoding_key} "{encoding}" (use {" or ".join(ENCODINGS)})')


def base64_bytes(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ActionError(f"{what} is not base64") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
