"""Canonical JSON (RFC 8785, JCS) and the `sha256:` digests built on it.

`rfc8785` is the reference encoder.  It is pure Python and about eight times
slower than the standard library, so `dumps` takes a fast path when the value
is provably one on which the two agree:

* no floats (plans carry none: floats in config are kept as decimal strings),
* integers within ±(2**53 - 1), which the plan model enforces,
* no string that sorts differently under UTF-16 code units than under code
  points, and no lone surrogates; a character at or above U+E000 anywhere in
  the output sends the value to `rfc8785` instead.

A hypothesis test holds the two encoders to the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import rfc8785

MAX_SAFE_INTEGER = 2**53 - 1

# Characters whose ordering or encoding differs between the fast path and JCS.
_NEEDS_REFERENCE = re.compile("[\ud800-\udfff\ue000-\U0010ffff]")


def _fast_path_safe(value: Any) -> bool:
    """Cheap structural check: True unless a float or a too-large int is present."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float or (kind is int and not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER):
            return False
    return True


def dumps(value: Any, *, numbers_checked: bool = False) -> bytes:
    """Encode a JSON value as RFC 8785 canonical bytes.

    `numbers_checked` skips the float/integer scan when the caller's types
    already rule both out (a validated `Plan`).
    """
    if numbers_checked or _fast_path_safe(value):
        text = json.dumps(
            value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
        )
        if text.isascii() or _NEEDS_REFERENCE.search(text) is None:
            return text.encode("utf-8")
    return rfc8785.dumps(value)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(body: Mapping[str, Any], *, numbers_checked: bool = False) -> str:
    """The digest a sealed document carries: `sha256:` of its body's canonical bytes."""
    return sha256_digest(dumps(body, numbers_checked=numbers_checked))


def dumps_sealed(
    body: Mapping[str, Any], field: str = "digest", *, numbers_checked: bool = False
) -> tuple[bytes, str]:
    """Canonical bytes of `body` with `field` added: the `sha256:` digest of `body`'s own bytes.

    The same bytes as `dumps({**body, field: digest_of(body)})`, with
    every member encoded once.  Returns (bytes, digest).
    """
    return seal_members(encode_members(body, numbers_checked=numbers_checked), field)


def encode_members(body: Mapping[str, Any], *, numbers_checked: bool = False) -> dict[str, bytes]:
    """Each member of the object `body` as its canonical `"key":value` bytes.

    A canonical object is its members sorted by key (UTF-16 code units) between
    braces, so members encoded once can be sealed (`seal_members`) again and
    again, with other members beside them, without encoding them anew.
    """
    return {
        key: dumps(key) + b":" + dumps(value, numbers_checked=numbers_checked)
        for key, value in body.items()
    }


def seal_members(members: Mapping[str, bytes], field: str = "digest") -> tuple[bytes, str]:
    """`dumps_sealed` of the object whose encoded members (`encode_members`) are `members`."""
    if field in members:
        raise ValueError(f"the body to seal already has a {field!r} member")
    digest = sha256_digest(_object(members))
    return _object({**members, field: dumps(field) + b":" + dumps(digest)}), digest


def array(items: Iterable[bytes]) -> bytes:
    """The canonical array of items that are canonical bytes already (`dumps` of each)."""
    return b"[" + b",".join(items) + b"]"


def _object(members: Mapping[str, bytes]) -> bytes:
    ordered = sorted(members, key=lambda key: key.encode("utf-16-be"))
    return b"{" + b",".join(members[key] for key in ordered) + b"}"
