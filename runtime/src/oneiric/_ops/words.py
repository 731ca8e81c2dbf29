"""Connections and consumer-group backlogs in words: shared by the status page and
`oneiric status` (kept apart from `page` so the command imports nothing more)."""

from __future__ import annotations

from typing import Any


def backlog_text(b: dict[str, Any], now: float) -> str:
    """One consumer group's last backlog sample (a consumer's `backlog` entry), in words."""
    if b.get("sampled_at") is None:
        text = f"{b['topic']}/{b['group']}: not sampled yet"
    else:
        lag = "unknown" if b.get("lag") is None else b["lag"]
        text = (
            f"{b['topic']}/{b['group']}: pending {b['pending']}  lag {lag}  "
            f"(sampled {max(0.0, now - b['sampled_at']):.1f} s ago)"
        )
    if b.get("error"):
        text += f"  last sample failed: {b['error']}"
    return text


def link_state(link: dict[str, Any], now: float) -> str:
    """A connection's state, with the attempt and next retry while reconnecting and the
    last known state when its process is gone."""
    state = str(link.get("state", ""))
    if state == "reconnecting":
        retry = link.get("next_retry_at")
        state += f" (attempt {link.get('attempt')}"
        state += f", next retry in {max(0.0, retry - now):.1f}s)" if retry else ")"
    elif state == "unknown" and link.get("last_state"):
        state += f" (last known: {link['last_state']})"
    return state
