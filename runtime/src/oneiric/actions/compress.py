"""Compression actions: gzip, zlib, bz2 or xz over text or base64 data.

Payload: {"data": str, "encoding": "utf-8"|"base64" (default utf-8),
"format": "gzip"|"zlib"|"bz2"|"xz", "level": int}.  The result carries the
output as base64 and the sizes.  Decompression stops at `max_output` bytes
(config, default 64 MiB) so a small bomb cannot exhaust memory.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import lzma
import zlib
from typing import Any, Literal

from oneiric.actions import ActionError, require

FORMATS = ("gzip", "zlib", "bz2", "xz")
DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024
_WBITS = {"gzip": 31, "zlib": 15}


def _input(payload: Any) -> tuple[bytes, str]:
    data = require(payload, "data", str)
    encoding = require(payload, "encoding", str, "utf-8")
    fmt = require(payload, "format", str, "gzip")
    if fmt not in FORMATS:
        raise ActionError(f'unknown format "{fmt}" (use {", ".join(FORMATS)})')
    if encoding == "base64":
        try:
            return base64.b64decode(data, validate=True), fmt
        except binascii.Error as exc:
            raise ActionError(f'payload "data" is not base64: {exc}') from None
    if encoding != "utf-8":
        raise ActionError(f'unknown encoding "{encoding}" (use utf-8 or base64)')
    return data.encode(), fmt


Format = Literal["gzip", "zlib", "bz2", "xz"]


def compress(payload: Any, *, level: int = 6, format: Format = "gzip") -> dict[str, Any]:
    """Compress `payload["data"]`; `level` and `format` from config unless the payload says."""
    if isinstance(payload, dict):
        payload = {"format": format, **payload}
    raw, fmt = _input(payload)
    level = require(payload, "level", int, level)
    if fmt == "gzip":
        out = _zlib_compress(raw, level, 31)
    elif fmt == "zlib":
        out = zlib.compress(raw, level)
    elif fmt == "bz2":
        out = bz2.compress(raw, max(1, min(level, 9)))
    else:
        out = lzma.compress(raw, preset=max(0, min(level, 9)))
    return _result(fmt, raw, out)


def decompress(
    payload: Any, *, format: Format = "gzip", max_output: int = DEFAULT_MAX_OUTPUT
) -> dict[str, Any]:
    """Decompress base64 `payload["data"]`, refusing output larger than `max_output` bytes."""
    if isinstance(payload, dict):
        payload = {"format": format, "encoding": "base64", **payload}
    raw, fmt = _input(payload)
    decoder: Any
    if fmt in _WBITS:
        decoder = zlib.decompressobj(_WBITS[fmt])
    elif fmt == "bz2":
        decoder = bz2.BZ2Decompressor()
    else:
        decoder = lzma.LZMADecompressor()
    try:
        out = decoder.decompress(raw, max_output + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
        raise ActionError(f"not valid {fmt} data: {exc}") from None
    if len(out) > max_output:
        raise ActionError(f"decompressed output exceeds {max_output} bytes; refused")
    return _result(fmt, raw, out)


def _zlib_compress(raw: bytes, level: int, wbits: int) -> bytes:
    encoder = zlib.compressobj(level, zlib.DEFLATED, wbits)
    return encoder.compress(raw) + encoder.flush()


def _result(fmt: str, raw: bytes, out: bytes) -> dict[str, Any]:
    return {
        "format": fmt,
        "data": base64.b64encode(out).decode("ascii"),
        "size_in": len(raw),
        "size_out": len(out),
    }
