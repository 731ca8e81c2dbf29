"""Counted nouns for human output: "1 error", "2 errors", never "1 error(s)"."""

from __future__ import annotations

_IRREGULAR = {"is": "are", "was": "were", "this": "these"}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`count` and `noun`, the noun in the plural unless `count` is 1 (`many` if irregular)."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {many or _IRREGULAR.get(noun) or noun + 's'}"
