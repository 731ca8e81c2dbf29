"""Webhook notification action for chat-ops: route a message to a channel's incoming webhook.

Payload: {"text", "title", "level" (info|warning|error|critical, default
info), "channel", "fields": {name: value}}.  Config: `routes`, a map from a
channel or a level to a webhook URL (keep URLs in secrets: `secret(...)`),
with "default" as the fallback; or a single `url` (unconfigured, the
payload's "url"); `format` (slack, discord,
teams or generic JSON); `attempts` (3) and `backoff` (0.5 s, doubling)
for 5xx, 429 and transport errors; `timeout` (10 s).  The channel is picked
in this order: the payload's channel, its level, "default".  The result
names the route taken, never the URL (it is a credential).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import anyio

from oneiric._text import plural
from oneiric.actions import ActionError, require, seconds

LEVELS = ("info", "warning", "error", "critical")
FORMATS = ("slack", "discord", "teams", "generic")


def render(fmt: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The request body a chat service expects for this message."""
    level = payload["level"]
    title = payload.get("title")
    head = f"[{level.upper()}]" + (f" {title}" if title else "")
    lines = [head, payload["text"]]
    lines += [f"• {name}: {value}" for name, value in payload.get("fields", {}).items()]
    text = "\n".join(lines)
    if fmt == "slack":
        return {"text": text}
    if fmt == "discord":
        return {"content": text[:2000]}
    if fmt == "teams":
        return {"text": text.replace("\n", "\n\n")}
    return {
        "level": level,
        "title": title,
        "text": payload["text"],
        "fields": payload.get("fields", {}),
    }


async def notify(
    payload: Any,
    *,
    routes: dict[str, str] | None = None,
    url: str | None = None,
    format: Literal["slack", "discord", "teams", "generic"] = "slack",
    attempts: int = 3,
    backoff: timedelta | float = 0.5,
    timeout: timedelta | float = 10.0,
) -> dict[str, Any]:
    import httpx

    text = require(payload, "text", str)
    level = require(payload, "level", str, "info")
    if level not in LEVELS:
        raise ActionError(f'unknown level "{level}" (use {", ".join(LEVELS)})')
    channel = require(payload, "channel", str, None)
    fields = require(payload, "fields", dict, {})
    if format not in FORMATS:
        raise ActionError(f'unknown webhook format "{format}" (use {", ".join(FORMATS)})')
    table = dict(routes or {})
    if url is not None:
        table.setdefault("default", url)
    if not table and isinstance(payload.get("url"), str):
        table["default"] = payload["url"]  # unconfigured (built-in invoked by name)
    route = next((name for name in (channel, level, "default") if name and name in table), None)
    if route is None:
        known = ", ".join(sorted(table)) or "none configured"
        raise ActionError(f'no webhook route for channel {channel!r} or level "{level}" ({known})')
    body = render(
        format, {"text": text, "title": payload.get("title"), "level": level, "fields": fields}
    )
    delay = seconds(backoff)
    error = ""
    async with httpx.AsyncClient(timeout=seconds(timeout)) as client:
        for attempt in range(1, max(1, attempts) + 1):
            try:
                answer = await client.post(table[route], json=body)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code < 400:
                    return {"route": route, "status": answer.status_code, "attempts": attempt}
                error = f"HTTP {answer.status_code}"
                if answer.status_code < 500 and answer.status_code != 429:
                    break
            if attempt < attempts:
                await anyio.sleep(delay * 2 ** (attempt - 1))
    raise ActionError(f'webhook route "{route}" failed after {plural(attempt, "attempt")}: {error}')
