"""HTTP request action (httpx).

Payload: {"url", "method" (GET), "headers", "params", "json" | "body" (text),
"timeout_s"}.  Config: `base_url` (relative URLs join it), `headers` (sent
with every request; the payload's win), `timeout` (default 10 s),
`max_bytes` (response body cap, default 10 MiB) and `raise_for_status`
(default true: a 4xx/5xx answer fails the action).  The result is
{"status", "headers", "body"} plus "json" when the answer is JSON.
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Any

from oneiric.actions import ActionError, require, seconds

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def request(
    payload: Any,
    *,
    base_url: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: timedelta | float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    raise_for_status: bool = True,
) -> dict[str, Any]:
    import httpx

    url = require(payload, "url", str)
    method = require(payload, "method", str, "GET").upper()
    if method not in METHODS:
        raise ActionError(f'unknown method "{method}" (use {", ".join(METHODS)})')
    sent = {**(headers or {}), **require(payload, "headers", dict, {})}
    params = require(payload, "params", dict, None)  # None keeps the query of `url`
    body: dict[str, Any] = {}
    if "json" in payload:
        body["json"] = payload["json"]
    elif "body" in payload:
        body["content"] = require(payload, "body", str).encode()
    limit = seconds(require(payload, "timeout_s", (int, float), seconds(timeout)))
    try:
        async with (
            httpx.AsyncClient(
                base_url=base_url or "", timeout=limit, follow_redirects=False
            ) as client,
            client.stream(method, url, headers=sent, params=params, **body) as answer,
        ):
            data = await _read_capped(answer, max_bytes)
    except httpx.InvalidURL as exc:
        raise ActionError(f"invalid URL {url!r}: {exc}") from None
    except httpx.UnsupportedProtocol as exc:
        raise ActionError(f"unsupported URL {url!r}: {exc}") from None
    except httpx.TimeoutException:
        raise ActionError(f"{method} {url}: no answer within {limit:g}s") from None
    except httpx.TransportError as exc:
        raise ActionError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
    if raise_for_status and answer.status_code >= 400:
        raise ActionError(f"{method} {url}: HTTP {answer.status_code} {answer.reason_phrase}")
    result: dict[str, Any] = {
        "status": answer.status_code,
        "headers": dict(answer.headers),
        "body": data.decode("utf-8", errors="replace"),
    }
    if answer.headers.get("content-type", "").split(";")[0].strip().endswith("json"):
        with contextlib.suppress(ValueError):
            result["json"] = json.loads(data)
    return result


async def _read_capped(answer: Any, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ActionError(f"response body larger than {max_bytes} bytes; refused")
        chunks.append(chunk)
    return b"".join(chunks)
