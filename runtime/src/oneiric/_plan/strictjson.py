"""A strict JSON reader (I-JSON, RFC 7493) for everything that crosses a trust boundary.

The standard library is lenient in ways an attacker can use: it keeps the last
of duplicate keys (a parser differential between signer and verifier), accepts
`NaN` and `Infinity`, integers of thousands of digits, nesting up to the
interpreter's recursion limit, lone UTF-16 surrogates, and guesses UTF-16/32
from the bytes.  `loads` refuses all of that with `StrictJSONError`, while
keeping the C scanner for speed (its hooks only fire on objects, numbers and
constants).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from oneiric._plan.canonical import MAX_SAFE_INTEGER

MAX_DEPTH = 64
# Longest decimal spelling of an integer within ±(2**53 - 1), sign included.
_MAX_INT_CHARS = len(str(-MAX_SAFE_INTEGER))
# An escaped UTF-16 surrogate; a valid pair is fine, a lone one is not.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class StrictJSONError(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJSONError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _int(text: str) -> int:
    # Checked on the spelling first: int() of a 100,000-digit string is itself slow.
    if len(text) > _MAX_INT_CHARS or abs(value := int(text)) > MAX_SAFE_INTEGER:
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise StrictJSONError(f"integer {shown} is outside ±(2**53 - 1)")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {text[:24]} overflows a double")
    return value


def _constant(text: str) -> Any:
    raise StrictJSONError(f"{text} is not JSON")


def _check_depth(value: Any, limit: int) -> None:
    """Breadth-first over containers only: no recursion, one pass."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise StrictJSONError(f"nesting deeper than {limit} levels")
        below: list[Any] = []
        for container in level:
            for item in container.values() if type(container) is dict else container:
                kind = type(item)
                if kind is dict or kind is list:
                    below.append(item)
        level = below


def loads(data: bytes, *, max_depth: int = MAX_DEPTH, authenticated: bool = False) -> Any:
    """Parse UTF-8 JSON bytes strictly; raise `StrictJSONError` saying what is wrong.

    `authenticated` is for bytes whose sha256 a verified signature pins and
    whose signer parsed them with this function in full (`oneiricc sign`):
    the two whole-document scans that cost most, duplicate keys and depth,
    are skipped; everything the C scanner checks for free stays.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"invalid UTF-8 at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        raise StrictJSONError("byte order mark before the JSON text")
    try:
        value = json.loads(
            text,
            object_pairs_hook=None if authenticated else _object,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except StrictJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise StrictJSONError(f"nesting deeper than {max_depth} levels") from None
    except ValueError as exc:  # int() digit limit and similar
        raise StrictJSONError(str(exc)) from None
    if not authenticated:
        _check_depth(value, max_depth)
    if _ESCAPED_SURROGATE.search(text) is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise StrictJSONError("lone UTF-16 surrogate in a string") from None
    return value
