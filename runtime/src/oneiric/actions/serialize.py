"""Serialisation: a JSON value to JSON text or MessagePack (base64), and back.

`encode` payload {"value": any JSON, "format": "json" | "msgpack"} answers {"format",
"data", "encoding" ("utf-8" for JSON text, "base64" for MessagePack), "size"}; JSON is
canonical (sorted keys, no spaces, no NaN).  `decode` payload {"data", "format", "encoding"}
answers {"value"} and refuses input over `max_bytes`.  MessagePack needs the `msgpack`
extra (`oneiric-runtime[msgpack]`); its binary and extension types have no JSON form and
are refused.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from oneiric.actions import ActionError, require
from oneiric.actions._data import b64, payload_bytes

Format = Literal["json", "msgpack"]
FORMATS = ("json", "msgpack")
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


def encode(payload: Any, *, format: Format = "json") -> dict[str, Any]:
    fmt = _format(require(payload, "format", str, format))
    if "value" not in payload:
        raise ActionError('the payload needs "value"')
    value = payload["value"]
    if fmt == "json":
        try:
            text = json.dumps(
                value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except ValueError as exc:
            raise ActionError(f"the value has no JSON form: {exc}") from None
        return {"format": fmt, "data": text, "encoding": "utf-8", "size": len(text.encode())}
    packed = _msgpack().packb(value, use_bin_type=True)
    return {"format": fmt, "data": b64(packed), "encoding": "base64", "size": len(packed)}


def decode(
    payload: Any, *, format: Format = "json", max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Any]:
    fmt = _format(require(payload, "format", str, format))
    if isinstance(payload, dict) and fmt == "msgpack":
        payload = {"encoding": "base64", **payload}
    raw = payload_bytes(payload)
    if len(raw) > max_bytes:
        raise ActionError(f"the data is {len(raw)} bytes; the limit is {max_bytes}")
    if fmt == "json":
        try:
            return {"value": json.loads(raw)}
        except ValueError as exc:
            raise ActionError(f"not JSON: {exc}") from None
    msgpack = _msgpack()
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ActionError(f"not MessagePack: {exc}") from None
    _check_json(value)
    return {"value": value}


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ActionError(f'unknown format "{fmt}" (use {", ".join(FORMATS)})')
    return fmt


def _msgpack() -> Any:
    try:
        import msgpack
    except ImportError:
        raise ActionError(
            "MessagePack needs the msgpack extra: pip install 'oneiric-runtime[msgpack]'"
        ) from None
    return msgpack


def _check_json(value: Any) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _check_json(item)
    elif isinstance(value, list):
        for item in value:
            _check_json(item)
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise ActionError(f"MessagePack {type(value).__name__} values have no JSON form")
